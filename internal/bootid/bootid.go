// Package bootid reads this machine's boot ID: a random identifier the
// kernel draws at every boot. What a page cache holds unflushed is lost
// exactly when it changes, which is why journals saved without a flush
// are stamped with it.
package bootid

import (
	"os"
	"strings"
)

// Read returns this boot's ID, or "" when it cannot be read (not Linux,
// or /proc not mounted).
func Read() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
