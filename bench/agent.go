package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The agent case syncs the same pair twice in each repetition: locally
// (deltasync sync SRC DST) and through a deltasync agent serving DST on
// loopback (deltasync sync SRC agent://...), with a counting TCP proxy
// between client and agent: the bytes on the wire are counted outside the
// tool, in both directions. The agent hashes DST itself, so only hashes
// and changed blocks cross the proxy. The agent's CPU time is added to
// the client's: both run on this machine's cores. Not in the default case
// list.

// countingProxy forwards TCP connections to target and counts the bytes
// each way.
type countingProxy struct {
	ln       net.Listener
	up, down atomic.Int64 // client to agent, agent to client
	wg       sync.WaitGroup
}

func newCountingProxy(target string) (*countingProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &countingProxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer c.Close()
				a, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer a.Close()
				done := make(chan struct{}, 2)
				pipe := func(dst, src net.Conn, n *atomic.Int64) {
					k, _ := io.Copy(dst, src)
					n.Add(k)
					if tc, ok := dst.(*net.TCPConn); ok {
						tc.CloseWrite()
					}
					done <- struct{}{}
				}
				go pipe(a, c, &p.up)
				go pipe(c, a, &p.down)
				<-done
				<-done
			}()
		}
	}()
	return p, nil
}

func (p *countingProxy) close() { p.ln.Close(); p.wg.Wait() }

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
					var p *countingProxy
					if p, err = newCountingProxy(addr); err != nil {
						stop()
						return err
					}
					os.Setenv("DELTASYNC_AGENT_TOKEN", token)
					m, err = runChild(ctx, true, c.deltasync, "sync", "--json", "-journal-dir", filepath.Join(dir, "j"),
						"-agent-pin", pin, src, "agent://"+p.ln.Addr().String()+"/t")
					os.Unsetenv("DELTASYNC_AGENT_TOKEN")
					acpu := stop()
					p.close()
					if m.Child == nil {
						m.Child = map[string]any{}
					}
					// The CPU of the operation is the client's and the
					// agent's (both on this machine's cores).
					m.Child["client_cpu_seconds"], m.Child["agent_cpu_seconds"] = m.CPUSeconds, acpu
					m.CPUSeconds += acpu
					fmt.Printf("  cpu: client %.2f s + agent %.2f s\n", m.Child["client_cpu_seconds"], acpu)
					up, down := p.up.Load(), p.down.Load()
					m.Child["wire_up_bytes"], m.Child["wire_down_bytes"] = float64(up), float64(down)
					hashes := blocks * 16
					m.Child["wire_ratio"] = float64(up+down) / float64(changed+hashes)
					fmt.Printf("  wire: %d B to the agent, %d B back; changed %d B + hashes %d B: %.4fx\n", up, down, changed, hashes, m.Child["wire_ratio"])
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
