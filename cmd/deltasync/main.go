// Command deltasync makes a target disk identical to a source disk by
// moving only the blocks that differ.
//
//	deltasync seed SRC DST       fill a new (or proven empty) target
//	deltasync sync SRC DST       send only the differences
//	deltasync verify SRC DST     exit 0 if and only if identical
//	deltasync demo               all of it on two demo images in a temp folder
//
// SRC and DST are image files, block devices, page blob URLs or agent://
// disks. Exit status: 0 success, 1 the disks differ (verify), 2 any error,
// 130 or 143 interrupted by SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/deltasync/deltasync/localdisk"
)

const usage = `usage: deltasync COMMAND [flags] ARGS

commands:
  seed SRC DST     fill a new target from SRC (zero blocks are not written)
  sync SRC DST     make an existing DST identical to SRC, sending only differences
  verify SRC DST   compare; exit 0 if identical, 1 if they differ
  snapshots URL    list a page blob's snapshots (recovery points, prior states)
  demo             seed, change and sync two demo images in a temp folder
  sign DISK -o SIG         write DISK's signature (its keyed block hashes)
  diff SRC SIG -o PATCH    write a patch turning the signed disk into SRC
  apply PATCH DST          check DST is the patch's base, then apply it
  agent -listen ADDR -disk NAME=PATH ...   serve disks to remote runs (agent://HOST:PORT/NAME)
  replicate SRC DST        replicate in cycles until stopped, a recovery point each (-once: one cycle)
  reprotect FAILED-OVER ORIGINAL   fail back: keep the original's prior state, send only the differences
  status [NAME]            show a replication's lag, last and next cycle, points and errors
  points list DST          list, restore (points restore DST POINT TO) or delete a target's recovery points
  version          print the version and the VCS revision of this binary

'deltasync COMMAND -h' lists the flags of a command; flags may come before
or after the arguments. Exit status: 0 success; 1 the disks differ (verify);
2 an error; 130 or 143 interrupted by SIGINT or SIGTERM (seed, sync, apply:
rerun the same command to resume).
`

// errDiffer makes the process exit with status 1: the disks differ.
var errDiffer = errors.New("the disks differ")

func main() {
	localdisk.RunWatchdogIfAsked() // first: the process may be a watchdog of a local target
	ctx := signalContext()
	err := run(ctx, os.Args[1:])
	var ie *interruptedError
	switch {
	case err == nil:
	case errors.Is(err, errHelp), errors.Is(err, errStopped):
		// errStopped: a service (replicate) stopped cleanly by a signal.
	case errors.Is(err, errDiffer):
		fmt.Fprintln(os.Stderr, "deltasync:", message(err))
		os.Exit(1)
	case errors.As(err, &ie) || (caught.Load() != nil && (len(os.Args) < 2 || os.Args[1] != "agent" && os.Args[1] != "replicate" && os.Args[1] != "reprotect")):
		// A one-shot command stopped by a signal; the agent, a
		// service, ends with status 0 after a clean stop.
		if ie == nil {
			err = interrupted(err, -1, 0, "rerun the same command")
		}
		fmt.Fprintln(os.Stderr, "deltasync:", message(err))
		os.Exit(signalStatus(*caught.Load()))
	default:
		fmt.Fprintln(os.Stderr, "deltasync:", message(err))
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "seed":
		return cmdCopy(ctx, "seed", args[1:])
	case "sync":
		return cmdCopy(ctx, "sync", args[1:])
	case "verify":
		return cmdVerify(ctx, args[1:])
	case "snapshots":
		return cmdSnapshots(ctx, args[1:])
	case "demo":
		return cmdDemo(ctx, args[1:])
	case "sign":
		return cmdSign(ctx, args[1:])
	case "diff":
		return cmdDiff(ctx, args[1:])
	case "apply":
		return cmdApply(ctx, args[1:])
	case "agent":
		return cmdAgent(ctx, args[1:])
	case "replicate":
		return cmdReplicate(ctx, args[1:])
	case "reprotect":
		return cmdReprotect(ctx, args[1:])
	case "status":
		return cmdStatus(ctx, args[1:])
	case "points":
		return cmdPoints(ctx, args[1:])
	case "version", "-version", "--version":
		return cmdVersion(args[1:])
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && args[0] == "help" {
			return run(ctx, []string{args[1], "-h"})
		}
		fmt.Print(usage)
		return errHelp
	}
	return &usageError{cmd: "", msg: fmt.Sprintf("unknown command %q", args[0])}
}
