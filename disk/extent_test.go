package disk

import (
	"fmt"
	"testing"
)

func TestSubtract(t *testing.T) {
	rs := []Range{{Off: 0, Len: 10}, {Off: 20, Len: 10}, {Off: 40, Len: 10}}
	for _, c := range []struct {
		r    Range
		want string
	}{
		{Range{Off: 5, Len: 20}, "[{0 5} {25 5} {40 10}]"},         // cuts two
		{Range{Off: 0, Len: 50}, "[]"},                             // covers all
		{Range{Off: 10, Len: 10}, "[{0 10} {20 10} {40 10}]"},      // between
		{Range{Off: 42, Len: 2}, "[{0 10} {20 10} {40 2} {44 6}]"}, // splits one
	} {
		if got := fmt.Sprint(Subtract(rs, c.r)); got != c.want {
			t.Errorf("Subtract(%v, %v) = %s, want %s", rs, c.r, got, c.want)
		}
	}
	if fmt.Sprint(rs) != "[{0 10} {20 10} {40 10}]" {
		t.Errorf("Subtract changed its input: %v", rs)
	}
}
