package main

// What every command shares: parsing flags wherever they are, -h, usage
// errors in one line, the message an error is printed as (flag names, not
// Go fields; never a secret), signals and exit statuses, and 'version'.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
)

// errHelp ends a command that printed its help (-h): exit status 0.
var errHelp = errors.New("help printed")

// usageError is a command line that cannot be run: printed in one line
// with the way to the command's help, exit status 2.
type usageError struct {
	cmd string // "sync", "agent cert"
	msg string
}

func (e *usageError) Error() string {
	if e.cmd == "" {
		return fmt.Sprintf("%s (see 'deltasync -h')", e.msg)
	}
	return fmt.Sprintf("%s: %s (see 'deltasync %s -h')", e.cmd, e.msg, e.cmd)
}

func usagef(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

// flags is the flag set of the running command, for flagMessage.
var flags *flag.FlagSet

// parseArgs parses fs's flags before, between or after the positional
// arguments ("sync SRC DST -json") and returns the positional ones; "--"
// ends the flags, and a flag's value is never taken for a positional
// argument (flag.Parse consumes it). -h prints the command's help on
// standard output and returns errHelp; any other error is a usageError,
// printed in one line (the flag list is for -h).
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	flags = fs
	help := fs.Usage
	if help == nil {
		help = fs.PrintDefaults
	}
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	defer func() { fs.Usage = help }()
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			help()
			fs.SetOutput(os.Stderr)
			return nil, errHelp
		}
		if err != nil {
			fs.SetOutput(os.Stderr)
			return nil, &usageError{cmd: fs.Name(), msg: err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			fs.SetOutput(os.Stderr)
			return pos, nil
		}
		if k := len(args) - len(rest); k > 0 && args[k-1] == "--" {
			fs.SetOutput(os.Stderr)
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// sizesNote ends the help of commands with size flags.
const sizesNote = "Sizes take a K, M, G or T suffix, binary: K = 1024, M = 1024 K (\"64K\", \"1MiB\", \"4G\").\n"

// goNames are the Go names of options that the packages' errors may
// mention, and the flag that sets each from the command line.
var goNames = []struct {
	re   *regexp.Regexp
	flag string
}{
	{regexp.MustCompile(`\b(Options\.)?AllowLive\b( \(-allow-live\))?`), "allow-live"},
	{regexp.MustCompile(`\b(Options\.)?TruncateExcess\b`), "truncate"},
	{regexp.MustCompile(`\b(Options\.)?DiscardBadJournal\b`), "discard-bad-journal"},
	{regexp.MustCompile(`\b(Options\.|ApplyOptions\.)?KeepExcess\b`), "keep-excess"},
	{regexp.MustCompile(`\b(ApplyOptions\.)?NoBaseCheck\b`), "no-base-check"},
	{regexp.MustCompile(`\b(Options\.)?BreakLease\b`), "break-lease"},
	{regexp.MustCompile(`\b(Options\.)?NoJournal\b`), "no-journal"},
	{regexp.MustCompile(`\b(Options\.)?KeepPrior\b`), "keep-prior"},
	{regexp.MustCompile(`\bOptions\.VHD\b`), "vhd"},
	{regexp.MustCompile(`\bOptions\.Verify\b`), "verify"},
}

// secretParams are the query fields (and connection string fields) whose
// values are secrets, wherever they appear in a message.
var secretParams = regexp.MustCompile(`(?i)\b(sig|AccountKey|SharedAccessSignature)=[^&;\s"')]+`)

// message is err as the command prints it: the Go names of options
// replaced by the flags of the running command that set them, and no
// secret (a page blob argument is shown without its SAS, as shown does;
// a sig=, an account key or the agent token never appears).
func message(err error) string {
	s := err.Error()
	for _, g := range goNames {
		if flags != nil && flags.Lookup(g.flag) != nil {
			s = g.re.ReplaceAllString(s, "-"+g.flag)
		}
	}
	return scrub(s)
}

// scrub removes secrets from s.
func scrub(s string) string {
	for _, a := range os.Args[1:] {
		if r := shown(a); r != a && len(a) > 0 {
			s = strings.ReplaceAll(s, a, r)
		}
	}
	s = secretParams.ReplaceAllString(s, "${1}=REDACTED")
	for _, k := range []string{"AZURE_STORAGE_KEY", "AZURE_STORAGE_CONNECTION_STRING", "DELTASYNC_AGENT_TOKEN", "AZURE_CLIENT_SECRET"} {
		if v := os.Getenv(k); len(v) >= 8 {
			s = strings.ReplaceAll(s, v, "REDACTED")
		}
	}
	return s
}

// caught is the first SIGINT or SIGTERM the process received, or nil.
var caught atomic.Pointer[os.Signal]

// signalCtx is the context signalContext made (Background before it
// runs, as in tests that call run directly).
var signalCtx = context.Background()

// signalContext is cancelled by the first SIGINT or SIGTERM, which is
// kept in caught; a second one ends the process at once (what the run
// saved last is what a rerun resumes from).
func signalContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	signalCtx = ctx
	c := make(chan os.Signal, 2)
	signal.Notify(c, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-c
		caught.Store(&s)
		cancel()
		s = <-c
		fmt.Fprintf(os.Stderr, "deltasync: %v again: stopping at once\n", s)
		os.Exit(signalStatus(s))
	}()
	return ctx
}

// signalStatus is the exit status of a command stopped by s: 128 plus
// the signal's number, as a shell reports a process killed by it (130
// for SIGINT, 143 for SIGTERM).
func signalStatus(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 130
}

// interruptedError ends a one-shot command stopped by a signal: it says
// how far the command went and what to do.
type interruptedError struct{ msg string }

func (e *interruptedError) Error() string { return e.msg }

// interrupted returns an *interruptedError when err ended a command that
// a signal interrupted, else err. at and total are bytes (at < 0:
// unknown); then says what a rerun does.
func interrupted(err error, at, total int64, then string) error {
	if err == nil || caught.Load() == nil {
		return err
	}
	msg := "interrupted"
	if at >= 0 && total > 0 {
		msg = fmt.Sprintf("interrupted at %s of %s", bytesHuman(at), bytesHuman(total))
	}
	return &interruptedError{msg: msg + "; " + then}
}

// cmdVersion prints the module version and the VCS revision the binary
// was built from (runtime/debug.ReadBuildInfo).
func cmdVersion(args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: deltasync version\nprints the module version and the VCS revision the binary was built from")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("version", "takes no arguments")
	}
	fmt.Println(versionLine())
	return nil
}

func versionLine() string {
	version, rev, when, modified := "unknown", "unknown (built without VCS information, e.g. -buildvcs=false)", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	s := fmt.Sprintf("deltasync %s, revision %s", version, rev)
	if modified {
		s += " (modified)"
	}
	if when != "" {
		s += ", committed " + when
	}
	return s + fmt.Sprintf(", %s %s/%s", runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
