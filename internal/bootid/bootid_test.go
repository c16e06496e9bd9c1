package bootid

import (
	"os"
	"regexp"
	"testing"
)

func TestRead(t *testing.T) {
	if _, err := os.Stat("/proc/sys/kernel/random/boot_id"); err != nil {
		if Read() != "" {
			t.Fatal("a boot ID without /proc/sys/kernel/random/boot_id")
		}
		t.Skip("no boot ID on this system:", err)
	}
	id := Read()
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(id) {
		t.Fatalf("boot ID %q is not a UUID", id)
	}
	if Read() != id {
		t.Fatal("the boot ID changed within one boot")
	}
}
