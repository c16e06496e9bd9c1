package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The agent case syncs the same pair twice in each repetition: locally
// (deltasync sync SRC DST) and through a deltasync agent serving DST on
// loopback (deltasync sync SRC agent://...). The bytes on the wire are
// counted outside the tool, by the kernel: the loopback interface's
// counters over the run, headers and acknowledgements included (a
// counting proxy, used before 2026-11-26, added a hop and 2-4% to the
// time). The agent hashes DST itself, so only hashes and changed blocks
// cross. The agent's CPU time is added to
// the client's: both run on this machine's cores. Not in the default case
// list.

// loBytes returns the bytes and packets the loopback interface has
// carried (its transmit counters; on loopback every packet is sent and
// received once).
func loBytes() (bytes, packets int64, err error) {
	b, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) != "lo" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 10 {
			break
		}
		bytes, err1 := strconv.ParseInt(f[8], 10, 64)
		packets, err2 := strconv.ParseInt(f[9], 10, 64)
		if err1 != nil || err2 != nil {
			break
		}
		return bytes, packets, nil
	}
	return 0, 0, fmt.Errorf("no counters for lo in /proc/net/dev")
}

// startAgent runs `deltasync agent` serving dst as disk "t" and returns
// its address and a stop function, which returns the CPU seconds the agent
// used.
func startAgent(c *config, dir, dst string) (string, func() float64, error) {
	cmd := exec.Command(c.deltasync, "agent", "-listen", "127.0.0.1:0", "-disk", "t="+dst,
		"-cert", filepath.Join(dir, "cert.pem"), "-key", filepath.Join(dir, "key.pem"),
		"-token-file", filepath.Join(dir, "tokens"), "-quiet")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() float64 {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if ps := cmd.ProcessState; ps != nil {
			return (ps.UserTime() + ps.SystemTime()).Seconds()
		}
		return 0
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if _, rest, ok := strings.Cut(sc.Text(), "listening on "); ok {
				select {
				case addr <- strings.Fields(rest)[0]:
				default:
				}
			}
		}
	}()
	select {
	case a := <-addr:
		return a, stop, nil
	case <-time.After(20 * time.Second):
		stop()
		return "", nil, fmt.Errorf("the agent did not say where it listens")
	}
}

func caseAgent(ctx context.Context, c *config, rep *Report) error {
	src, orig, changed, err := makePair(c, c.size, 0.01, 0, false)
	if err != nil {
		return err
	}
	defer os.Remove(src)
	defer os.Remove(orig)
	dir := filepath.Join(c.dir, "agent")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	out, err := exec.Command(c.deltasync, "agent", "cert", "-hosts", "127.0.0.1",
		"-cert", filepath.Join(dir, "cert.pem"), "-key", filepath.Join(dir, "key.pem")).Output()
	if err != nil {
		return fmt.Errorf("agent cert: %w", err)
	}
	pin := strings.TrimSpace(string(out))
	out, err = exec.Command(c.deltasync, "agent", "token", "-disks", "t", "-token-file", filepath.Join(dir, "tokens")).Output()
	if err != nil {
		return fmt.Errorf("agent token: %w", err)
	}
	token := strings.TrimSpace(string(out))
	dst := filepath.Join(c.dir, "target.img")
	blocks := (c.size + c.block - 1) / c.block
	for _, cache := range c.caches {
		sp := spec{Case: "agent", Size: c.size, Block: c.block, Change: 0.01, Pattern: "scattered", Cache: cache, Changed: changed}
		res := Result{Spec: sp, Runs: map[string][]Measure{}}
		for r := 0; r < c.runs; r++ {
			for _, t := range []string{"floor", "deltasync", "deltasync-agent"} {
				if err := resetTarget(orig, dst); err != nil {
					return err
				}
				if err := prepare(cache, src, dst); err != nil {
					return err
				}
				var m Measure
				switch t {
				case "floor":
					m, err = runChild(ctx, false, "floor", src, dst)
				case "deltasync":
					m, err = runChild(ctx, true, c.deltasync, "sync", "--json", "-journal-dir", filepath.Join(dir, "j"), src, dst)
				case "deltasync-agent":
					var addr string
					var stop func() float64
					addr, stop, err = startAgent(c, dir, dst)
					if err != nil {
						return err
					}
					b0, p0, lerr := loBytes()
					if lerr != nil {
						stop()
						return lerr
					}
					os.Setenv("DELTASYNC_AGENT_TOKEN", token)
					m, err = runChild(ctx, true, c.deltasync, "sync", "--json", "-journal-dir", filepath.Join(dir, "j"),
						"-agent-pin", pin, src, "agent://"+addr+"/t")
					os.Unsetenv("DELTASYNC_AGENT_TOKEN")
					b1, p1, lerr := loBytes()
					acpu := stop()
					if lerr != nil {
						return lerr
					}
					if m.Child == nil {
						m.Child = map[string]any{}
					}
					// The CPU of the operation is the client's and the
					// agent's (both on this machine's cores).
					m.Child["client_cpu_seconds"], m.Child["agent_cpu_seconds"] = m.CPUSeconds, acpu
					m.CPUSeconds += acpu
					fmt.Printf("  cpu: client %.2f s + agent %.2f s\n", m.Child["client_cpu_seconds"], acpu)
					wire, pkts := b1-b0, p1-p0
					m.Child["wire_bytes"], m.Child["wire_packets"] = float64(wire), float64(pkts)
					hashes := blocks * 16
					m.Child["wire_ratio"] = float64(wire) / float64(changed+hashes)
					fmt.Printf("  wire: %d B in %d packets both ways (IP and TCP headers and acknowledgements included); changed %d B + hashes %d B: %.4fx\n",
						wire, pkts, changed, hashes, m.Child["wire_ratio"])
				}
				if err != nil {
					return fmt.Errorf("%s: %w", t, err)
				}
				if t != "floor" {
					if err := identical(src, dst); err != nil {
						return fmt.Errorf("%s left a WRONG TARGET: %w", t, err)
					}
					m.Verified = true
				}
				res.Runs[t] = append(res.Runs[t], m)
			}
		}
		res.summarise()
		rep.Results = append(rep.Results, res)
		res.print(os.Stdout)
	}
	return nil
}
