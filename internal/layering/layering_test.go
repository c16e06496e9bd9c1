// Package layering holds the test that keeps the module's packages in
// their floors: it reads the import graph with `go list` and fails, naming
// the import and the rule, when an import breaks one.
package layering

import (
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/deltasync/deltasync/"

// pkg is what the rules need of a package: its path (without the module
// prefix) and what it imports, in its own files and in its tests.
type pkg struct {
	Path        string
	Imports     []string // of its own files: what users of it pull in
	TestImports []string // of its tests, internal and external
	Deps        []string // everything its own files pull in, transitively
}

// A rule forbids some imports to some packages.
type rule struct {
	// applies tells whether the rule is about package p.
	applies func(p string) bool
	// forbids tells whether importing imp breaks the rule.
	forbids func(imp string) bool
	// tests: the rule holds for test imports too.
	tests bool
	// deps: the rule holds for everything the package pulls in, not only
	// what it imports itself.
	deps bool
	// why is the rule in words, printed when it is broken.
	why string
}

func is(names ...string) func(string) bool {
	return func(p string) bool {
		for _, n := range names {
			if p == n || strings.HasPrefix(p, n+"/") {
				return true
			}
		}
		return false
	}
}

func azure(imp string) bool { return strings.HasPrefix(imp, "github.com/Azure/") }

var rules = []rule{
	{
		applies: func(p string) bool { return p == "disk" },
		forbids: func(imp string) bool { return strings.HasPrefix(imp, module) || !std(imp) },
		why:     "disk is the leaf every package shares: it imports nothing of ours and nothing outside the standard library",
	},
	{
		applies: is("blockdiff"),
		forbids: func(imp string) bool {
			return is(module+"transfer", module+"localdisk", module+"pageblob", module+"agent", module+"patch", module+"replicate")(imp) || azure(imp)
		},
		why: "blockdiff compares and hashes: it knows nothing of writing (transfer, patch, replicate), of adapters, or of Azure",
	},
	{
		applies: is("localdisk", "pageblob"),
		forbids: is(module+"transfer", module+"blockdiff", module+"localdisk", module+"pageblob", module+"agent", module+"patch", module+"replicate"),
		why:     "an adapter implements the words of package disk: it imports neither the engines (transfer, blockdiff) nor another adapter",
	},
	{
		// The one exception, with its reason: the agent's server opens
		// the disks it serves with localdisk, and hashes them near their
		// data with blockdiff (that is the agent's purpose).
		applies: is("agent"),
		forbids: is(module+"transfer", module+"pageblob", module+"patch", module+"replicate"),
		why:     "the agent is an adapter: it may open local disks (localdisk, its server's disks) and hash them (blockdiff), nothing else of ours but disk",
	},
	{
		applies: func(p string) bool {
			return p == "disk" || p == "disk/disktest" || p == "replicate" || is("blockdiff", "transfer", "localdisk", "patch", "agent")(p)
		},
		forbids: azure,
		deps:    true,
		why:     "a user of local disks builds no Azure SDK: page blobs are pageblob's, and replication's page-blob side is replicate/blob",
	},
	{
		applies: func(string) bool { return true },
		forbids: is(module+"bench", module+"examples", module+"cmd"),
		tests:   true,
		why:     "nothing imports bench, examples or cmd: they are programs at the top",
	},
	{
		applies: func(p string) bool { return !strings.HasSuffix(p, "test") },
		forbids: func(imp string) bool {
			return strings.HasPrefix(imp, module) && (strings.HasSuffix(imp, "test") || imp == module+"internal/faultfs")
		},
		why: "test support (disk/disktest, pageblob/pageblobtest, internal/faultfs) is for tests, not for the library's or the programs' own files",
	},
}

// std tells a standard-library import path (no dot in its first element).
func std(imp string) bool {
	first, _, _ := strings.Cut(imp, "/")
	return !strings.Contains(first, ".")
}

// check returns a line per import that breaks a rule.
func check(pkgs []pkg) []string {
	var bad []string
	for _, p := range pkgs {
		for _, r := range rules {
			if !r.applies(p.Path) {
				continue
			}
			imps := p.Imports
			if r.tests {
				imps = append(append([]string(nil), p.Imports...), p.TestImports...)
			}
			verb := "imports"
			if r.deps {
				imps, verb = p.Deps, "pulls in"
			}
			for _, imp := range imps {
				if r.forbids(imp) && imp != module+p.Path {
					bad = append(bad, fmt.Sprintf("%s %s %s: %s", p.Path, verb, strings.TrimPrefix(imp, module), r.why))
				}
			}
		}
	}
	sort.Strings(bad)
	return bad
}

func TestLayering(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	cmd := exec.Command("go", "list", "-json", "-e", "github.com/deltasync/deltasync/...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct {
			ImportPath           string
			Imports, TestImports []string
			XTestImports, Deps   []string
			Error                *struct{ Err string }
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if p.Error != nil {
			t.Fatalf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs = append(pkgs, pkg{Path: strings.TrimPrefix(p.ImportPath, module), Imports: p.Imports, TestImports: append(p.TestImports, p.XTestImports...), Deps: p.Deps})
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages: the test would prove nothing", len(pkgs))
	}
	for _, b := range check(pkgs) {
		t.Error(b)
	}
}

// TestRulesCatch: the rules find the breaks they are written for, in a
// made-up graph.
func TestRulesCatch(t *testing.T) {
	broken := []pkg{
		{Path: "disk", Imports: []string{"io", module + "blockdiff"}},
		{Path: "blockdiff", Imports: []string{module + "disk", module + "transfer"}},
		{Path: "blockdiff/x", Imports: []string{"github.com/Azure/azure-sdk-for-go/sdk/azcore"}},
		{Path: "pageblob", Imports: []string{module + "disk", module + "localdisk"}},
		{Path: "localdisk", Imports: []string{module + "transfer"}},
		{Path: "agent", Imports: []string{module + "localdisk", module + "blockdiff", module + "transfer"}},
		{Path: "transfer", TestImports: []string{module + "cmd/deltasync"}},
		{Path: "patch", Imports: []string{module + "disk/disktest"}},
		{Path: "replicate", Imports: []string{module + "transfer"}, Deps: []string{module + "transfer", "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"}},
		{Path: "replicate/blob", Imports: []string{module + "pageblob"}, Deps: []string{module + "pageblob", "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"}},
	}
	got := check(broken)
	want := []string{"agent imports transfer", "blockdiff imports transfer", "blockdiff/x imports github.com/Azure", "disk imports blockdiff",
		"localdisk imports transfer", "pageblob imports localdisk", "patch imports disk/disktest", "replicate pulls in github.com/Azure", "transfer imports cmd/deltasync"}
	if len(got) != len(want) {
		t.Fatalf("%d breaks found, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("break %d: %q, want it to start with %q", i, got[i], w)
		}
	}
	if ok := check([]pkg{{Path: "agent", Imports: []string{module + "localdisk", module + "blockdiff", module + "disk", "io"}}}); len(ok) != 0 {
		t.Errorf("the agent's allowed imports are reported: %v", ok)
	}
}
