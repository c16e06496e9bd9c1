package disk

import (
	"fmt"
	"os"
	"path/filepath"
)

// DefaultStateDir returns deltasync's state directory: journals, a
// watchdog's records, lease records. It is $XDG_STATE_HOME/deltasync
// when that variable holds an absolute path, else
// ~/.local/state/deltasync. It reads the environment when called.
func DefaultStateDir() (string, error) {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "deltasync"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no state directory: %w", err)
	}
	return filepath.Join(home, ".local", "state", "deltasync"), nil
}
