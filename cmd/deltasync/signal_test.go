package main

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestOpenContextAfterCaught: a blob's open context is cancelled by the
// signal only once the signal is recorded, so that main, seeing the
// open fail with "context canceled", exits 143 and not 2 (CI once saw
// the verify of a stalled blob exit 2: openContext had its own
// signal.Notify, whose cancellation raced the record). One signal per
// process: signalContext exits on the second.
func TestOpenContextAfterCaught(t *testing.T) {
	if os.Getenv("DELTASYNC_SIGNAL_CHILD") != "1" {
		t.Skip("run in its own process by TestOpenContextAfterCaughtProcess")
	}
	signalContext()
	ctx, cancel := openContext()
	defer cancel()
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the open context was not cancelled by SIGTERM")
	}
	if caught.Load() == nil {
		t.Fatal("the open context was cancelled before the signal was recorded: main would exit 2, not 143")
	}
}

// TestOpenContextAfterCaughtProcess runs TestOpenContextAfterCaught in
// fresh processes, 20 times (the race it guards is a matter of
// scheduling).
func TestOpenContextAfterCaughtProcess(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		cmd := exec.Command(exe, "-test.run=^TestOpenContextAfterCaught$", "-test.count=1")
		cmd.Env = append(os.Environ(), "DELTASYNC_SIGNAL_CHILD=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("round %d: %v\n%s", i, err, out)
		}
	}
}
