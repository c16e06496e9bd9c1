package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Report is everything one bench run measured.
type Report struct {
	Command string `json:"command"`
	// Commands lists every run merged into this report (-render).
	Commands []string          `json:"commands,omitempty"`
	Machine  string            `json:"machine"`
	Started  time.Time         `json:"started"`
	Finished time.Time         `json:"finished"`
	Peers    map[string]string `json:"peers"`
	Results  []Result          `json:"results"`
	// Notes say what was not measured, and why.
	Notes []string `json:"notes,omitempty"`
}

func (r *Report) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	fmt.Println("note:", n)
	r.Notes = append(r.Notes, n)
}

// Result is one case measured with every tool.
type Result struct {
	Spec    spec                 `json:"spec"`
	Runs    map[string][]Measure `json:"runs"`
	Summary []Summary            `json:"summary"`
}

// Summary is one tool's figures in one case: medians over the runs, with
// the minimum and maximum of the time.
type Summary struct {
	Tool       string  `json:"tool"`
	Runs       int     `json:"runs"`
	Seconds    float64 `json:"seconds_median"`
	SecondsMin float64 `json:"seconds_min"`
	SecondsMax float64 `json:"seconds_max"`
	// Ratio is the median of this tool's time over the floor's time in
	// the same repetition.
	Ratio      float64 `json:"ratio_to_floor"`
	CPUSeconds float64 `json:"cpu_seconds_median"`
	AnonMiB    float64 `json:"peak_anon_mib_max"`
	VmHWMMiB   float64 `json:"vmhwm_mib_max"`
	ReadBytes  int64   `json:"read_bytes_median"`
	WriteBytes int64   `json:"write_bytes_median"`
	// ToolWritten is what deltasync itself says it wrote (and zeroed).
	ToolWritten int64 `json:"tool_bytes_written,omitempty"`
	ToolZeroed  int64 `json:"tool_bytes_zeroed,omitempty"`
	// WireBytes is the bytes the loopback interface (or, in reports
	// before 2026-11-26, a counting proxy) saw cross the network,
	// both ways (agent case).
	WireBytes int64 `json:"wire_bytes,omitempty"`
}

func (r *Report) last() *Result { return &r.Results[len(r.Results)-1] }

// childInt returns a number the named tool reported itself, from its
// median run.
func (r *Result) childInt(tool, key string) int64 {
	ms := r.Runs[tool]
	if len(ms) == 0 {
		return -1
	}
	v, ok := ms[len(ms)/2].Child[key].(float64)
	if !ok {
		return -1
	}
	return int64(v)
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func (r *Result) summarise() {
	floor := r.Runs["floor"]
	names := make([]string, 0, len(r.Runs))
	for n := range r.Runs {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return order(names[i]) < order(names[j]) })
	r.Summary = nil
	for _, n := range names {
		ms := r.Runs[n]
		var secs, ratios, cpu, rd, wr []float64
		s := Summary{Tool: n, Runs: len(ms), SecondsMin: ms[0].Seconds, SecondsMax: ms[0].Seconds}
		for i, m := range ms {
			secs = append(secs, m.Seconds)
			if i < len(floor) && floor[i].Seconds > 0 {
				ratios = append(ratios, m.Seconds/floor[i].Seconds)
			}
			cpu = append(cpu, m.CPUSeconds)
			rd = append(rd, float64(m.ReadBytes))
			wr = append(wr, float64(m.WriteBytes))
			s.SecondsMin, s.SecondsMax = min(s.SecondsMin, m.Seconds), max(s.SecondsMax, m.Seconds)
			s.AnonMiB, s.VmHWMMiB = max(s.AnonMiB, m.PeakAnonMiB), max(s.VmHWMMiB, m.VmHWMMiB)
		}
		s.Seconds, s.CPUSeconds = median(secs), median(cpu)
		if len(ratios) > 0 {
			s.Ratio = median(ratios)
		}
		s.ReadBytes, s.WriteBytes = int64(median(rd)), int64(median(wr))
		if strings.HasPrefix(n, "deltasync") {
			if v := r.childInt(n, "bytes_written"); v >= 0 {
				s.ToolWritten = v
			}
			if v := r.childInt(n, "bytes_zeroed"); v >= 0 {
				s.ToolZeroed = v
			}
			if w := r.childInt(n, "wire_bytes"); w >= 0 {
				s.WireBytes = w
			} else if up, down := r.childInt(n, "wire_up_bytes"), r.childInt(n, "wire_down_bytes"); up >= 0 && down >= 0 {
				s.WireBytes = up + down // reports made with the counting proxy
			}
		}
		r.Summary = append(r.Summary, s)
	}
}

func order(tool string) int {
	switch tool {
	case "floor":
		return 0
	case "deltasync":
		return 1
	}
	if strings.HasPrefix(tool, "deltasync") {
		return 2
	}
	return 3
}

func (sp spec) title() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s", sp.Case, human(sp.Size), sp.Cache)
	if sp.Change > 0 {
		fmt.Fprintf(&b, " %.1f%% %s", sp.Change*100, sp.Pattern)
	}
	if sp.WriteLen > 0 {
		fmt.Fprintf(&b, " %s writes, refine %s", human(sp.WriteLen), refineName(sp.Refine))
	}
	if sp.Case == "seed" {
		fmt.Fprintf(&b, " %.0f%% zeros", sp.ZeroFrac*100)
	}
	return b.String()
}

func refineName(r int64) string {
	if r == 0 {
		return "off"
	}
	return human(r)
}

func (r *Result) print(w io.Writer) {
	fmt.Fprintf(w, "%s (changed %s):\n", r.Spec.title(), mib(r.Spec.Changed))
	for _, s := range r.Summary {
		fmt.Fprintf(w, "  %-17s %7.3fs [%.3f-%.3f]  %5.2fx floor  cpu %6.2fs  anon %6.1f MiB  hwm %7.1f MiB  read %s  written %s",
			s.Tool, s.Seconds, s.SecondsMin, s.SecondsMax, s.Ratio, s.CPUSeconds, s.AnonMiB, s.VmHWMMiB, mib(s.ReadBytes), mib(s.WriteBytes))
		if s.ToolWritten > 0 || s.Tool == "deltasync" && r.Spec.Case != "compare" {
			fmt.Fprintf(w, " (own count %s + zeroed %s)", mib(s.ToolWritten), mib(s.ToolZeroed))
		}
		if s.WireBytes > 0 {
			fmt.Fprintf(w, " on the wire %s", mib(s.WireBytes))
		}
		fmt.Fprintln(w)
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs, %s/%s, %s", cpu, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

func (r *Report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), js, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(r.markdown()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.svg"), []byte(r.svg()), 0o644); err != nil {
		return err
	}
	fmt.Printf("report written to %s/report.{json,md,svg}\n", dir)
	return nil
}

func (r *Report) markdown() string {
	var b strings.Builder
	cmds := r.Commands
	if len(cmds) == 0 {
		cmds = []string{r.Command}
	}
	b.WriteString("# deltasync bench\n\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, "`%s`\n\n", c)
	}
	fmt.Fprintf(&b, "%s; %s to %s.\n\n", r.Machine, r.Started.Format(time.RFC3339), r.Finished.Format(time.RFC3339))
	var peers []string
	for n, p := range r.Peers {
		peers = append(peers, n+": "+p)
	}
	sort.Strings(peers)
	fmt.Fprintf(&b, "Peers: %s.\n\n", strings.Join(peers, ", "))
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "Note: %s\n\n", n)
	}
	b.WriteString("Times are medians of the runs [min-max]; the ratio is to the floor (reading the case's files in parallel with plain reads) measured in the same repetition. Memory is peak RssAnon (anonymous) and VmHWM (resident, mapped file pages included). Read and written are /proc/PID/io read_bytes and write_bytes, counted by the kernel (whole page-cache folios: a 4 KiB change inside a 64 KiB folio is written back as 64 KiB); 'tool wrote' is what deltasync itself wrote and cleared (what would cross a network); 'wire' is what crossed between client and agent, counted by the kernel on the loopback interface (IP and TCP headers and acknowledgements included). Every target was verified identical to its source after each run.\n\n")
	b.WriteString("| case | tool | time s [min-max] | × floor | CPU s | anon MiB | VmHWM MiB | read MiB | written MiB | tool wrote MiB | wire MiB | changed MiB |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, res := range r.Results {
		for _, s := range res.Summary {
			wire := "-"
			if s.WireBytes > 0 {
				wire = fmt.Sprintf("%.2f", float64(s.WireBytes)/(1<<20))
			}
			own := "-"
			if strings.HasPrefix(s.Tool, "deltasync") && res.Spec.Case != "compare" {
				own = fmt.Sprintf("%.1f", float64(s.ToolWritten+s.ToolZeroed)/(1<<20))
			}
			fmt.Fprintf(&b, "| %s | %s | %.3f [%.3f-%.3f] | %.2f | %.2f | %.1f | %.1f | %.1f | %.1f | %s | %s | %.1f |\n",
				res.Spec.title(), s.Tool, s.Seconds, s.SecondsMin, s.SecondsMax, s.Ratio, s.CPUSeconds, s.AnonMiB, s.VmHWMMiB,
				float64(s.ReadBytes)/(1<<20), float64(s.WriteBytes)/(1<<20), own, wire, float64(res.Spec.Changed)/(1<<20))
		}
	}
	return b.String()
}

// commands are the runs behind a report: its own, or those it merged.
func (r *Report) commands() []string {
	if len(r.Commands) > 0 {
		return r.Commands
	}
	return []string{r.Command}
}

// renderReports merges earlier reports (their results in order, each
// run's command kept in Commands) and writes them out again, so that a
// report can be re-rendered, or completed or updated by separate runs: a
// later result for the same case (same spec) replaces the earlier one in
// place.
func renderReports(paths []string, dir string) error {
	var out Report
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var r Report
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if i == 0 {
			out = r
			out.Commands = r.commands()
			continue
		}
		out.Commands = append(out.Commands, r.commands()...)
		for _, res := range r.Results {
			replaced := false
			for j := range out.Results {
				if out.Results[j].Spec == res.Spec {
					out.Results[j], replaced = res, true
					break
				}
			}
			if !replaced {
				out.Results = append(out.Results, res)
			}
		}
		out.Notes = append(out.Notes, r.Notes...)
		if r.Finished.After(out.Finished) {
			out.Finished = r.Finished
		}
		for k, v := range r.Peers {
			out.Peers[k] = v
		}
	}
	for i := range out.Results {
		out.Results[i].summarise()
	}
	return out.write(dir)
}
