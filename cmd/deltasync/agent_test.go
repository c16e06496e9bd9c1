//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// agentRun runs the binary (built by TestMain) with the environment
// given, and returns its exit code, stdout and stderr.
func agentRun(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(se.String(), "panic:") {
		t.Fatalf("deltasync %s panicked:\n%s", strings.Join(args, " "), se.String())
	}
	return code, so.String(), se.String()
}

// startAgentProcess starts 'deltasync agent' serving disk d and returns
// its address and certificate pin; the process is stopped (SIGTERM, and
// it must exit 0) when the test ends.
func startAgentProcess(t *testing.T, dir, disk string) (addr, pin string) {
	t.Helper()
	cmd := exec.Command(bin, "agent", "-listen", "127.0.0.1:0", "-disk", "d="+disk,
		"-cert", filepath.Join(dir, "cert.pem"), "-key", filepath.Join(dir, "key.pem"),
		"-token-file", filepath.Join(dir, "tokens"), "-hash-concurrency", "2")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent exit: %v", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Error("agent did not stop on SIGTERM")
		}
		for l := range lines {
			t.Log("agent: ", l)
		}
	})
	re := regexp.MustCompile(`listening on (\S+) \(certificate sha256 ([0-9a-f]{64})\)`)
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("agent ended before listening")
			}
			t.Log("agent: ", l)
			if m := re.FindStringSubmatch(l); m != nil {
				return m[1], m[2]
			}
		case <-timeout:
			t.Fatal("agent did not say where it listens")
		}
	}
}

// TestAgentSync runs the agent and the client as two processes on
// loopback: refusals leave the disk alone; a sync through the agent ends
// identical and sends only the changes; a second sync finds nothing to
// do; a pull from the agent into a local file ends identical.
func TestAgentSync(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	const size, bs = 16 << 20, 64 << 10
	src := make([]byte, size)
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	dst := bytes.Clone(src)
	changed := 0
	for i := 0; i < size/bs; i += 9 {
		copy(dst[i*bs:(i+1)*bs], bytes.Repeat([]byte{byte(i)}, bs))
		changed += bs
	}
	srcPath, dstPath := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	os.WriteFile(srcPath, src, 0o644)
	os.WriteFile(dstPath, dst, 0o644)
	jdir := filepath.Join(dir, "journals")
	env := []string{"XDG_STATE_HOME=" + dir}

	code, pinOut, se := agentRun(t, env, "agent", "cert", "-hosts", "127.0.0.1,localhost",
		"-cert", filepath.Join(dir, "cert.pem"), "-key", filepath.Join(dir, "key.pem"))
	if code != 0 {
		t.Fatalf("agent cert: %d %s", code, se)
	}
	code, tokOut, se := agentRun(t, env, "agent", "token", "-disks", "d", "-ttl", "1h", "-token-file", filepath.Join(dir, "tokens"))
	if code != 0 {
		t.Fatalf("agent token: %d %s", code, se)
	}
	token := strings.TrimSpace(tokOut)
	tokFile := filepath.Join(dir, "token")
	os.WriteFile(tokFile, []byte(token+"\n"), 0o600)

	code, _, se = agentRun(t, env, "agent", "-listen", "127.0.0.1:0", "-disk", "d="+dstPath,
		"-cert", filepath.Join(dir, "cert.pem"), "-key", filepath.Join(dir, "key.pem"),
		"-token-file", filepath.Join(dir, "tokens"), "-hash-concurrency", "-1")
	if code != 2 || !strings.Contains(se, "-hash-concurrency") {
		t.Fatalf("agent -hash-concurrency -1: exit %d, stderr %q (want 2 and the flag named)", code, se)
	}
	addr, pin := startAgentProcess(t, dir, dstPath)
	if pin != strings.TrimSpace(pinOut) {
		t.Fatalf("agent's pin %s, cert's %s", pin, pinOut)
	}
	url := "agent://" + addr + "/d"

	for _, tc := range []struct {
		name string
		env  []string
		args []string
		says string
	}{
		{"no token", nil, []string{"-agent-pin", pin}, "no token"},
		{"wrong token", []string{"DELTASYNC_AGENT_TOKEN=" + token + "x"}, []string{"-agent-pin", pin}, "not authorized"},
		{"wrong pin", []string{"DELTASYNC_AGENT_TOKEN=" + token}, []string{"-agent-pin", strings.Repeat("0", 64)}, "pin"},
		{"unknown disk", []string{"DELTASYNC_AGENT_TOKEN=" + token}, []string{"-agent-pin", pin, "-url", url + "x"}, "not authorized"},
	} {
		args := append([]string{"sync", "-journal-dir", jdir}, tc.args...)
		target := url
		if len(args) > 2 && args[len(args)-2] == "-url" {
			target = args[len(args)-1]
			args = args[:len(args)-2]
		}
		args = append(args, srcPath, target)
		code, _, se := agentRun(t, append(env, tc.env...), args...)
		if code != 2 || !strings.Contains(se, tc.says) {
			t.Fatalf("%s: exit %d, stderr %q (want 2 and %q)", tc.name, code, se, tc.says)
		}
		if strings.Contains(se, token) {
			t.Fatalf("%s: the token is printed: %s", tc.name, se)
		}
		if got, _ := os.ReadFile(dstPath); !bytes.Equal(got, dst) {
			t.Fatalf("%s: the disk changed", tc.name)
		}
	}

	code, out, se := agentRun(t, env, "sync", "-json", "-journal-dir", jdir, "-agent-token-file", tokFile, "-agent-pin", pin, "-verify", srcPath, url)
	if code != 0 {
		t.Fatalf("sync: exit %d: %s", code, se)
	}
	var r result
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Logf("sync through the agent: %s", out)
	if got, _ := os.ReadFile(dstPath); !bytes.Equal(got, src) {
		t.Fatal("the agent's disk differs from the source")
	}
	if r.BytesWritten != int64(changed) || r.TargetRead != 0 || !r.Verified {
		t.Fatalf("wrote %d (changed %d), read %d of the target, verified %v", r.BytesWritten, changed, r.TargetRead, r.Verified)
	}

	// verify across the connection: the agent hashes its own disk.
	if code, out, se := agentRun(t, append(env, "DELTASYNC_AGENT_TOKEN="+token), "verify", "-agent-pin", pin, srcPath, url); code != 0 {
		t.Fatalf("verify through the agent: exit %d: %s %s", code, out, se)
	}
	other := filepath.Join(dir, "other.img")
	os.WriteFile(other, dst, 0o644) // the old target: differs
	if code, _, se := agentRun(t, append(env, "DELTASYNC_AGENT_TOKEN="+token), "verify", "-agent-pin", pin, other, url); code != 1 {
		t.Fatalf("verify of differing disks through the agent: exit %d (want 1): %s", code, se)
	}

	// Again, with -fsync checkpoint: nothing to write.
	code, out, se = agentRun(t, append(env, "DELTASYNC_AGENT_TOKEN="+token), "sync", "-json", "-fsync", "checkpoint", "-journal-dir", jdir, "-agent-pin", pin, srcPath, url)
	if code != 0 {
		t.Fatalf("second sync: exit %d: %s", code, se)
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.BytesWritten != 0 {
		t.Fatalf("second sync wrote: %s", out)
	}

	// Pull: the agent's disk into a local file.
	pulled := filepath.Join(dir, "pulled.img")
	os.WriteFile(pulled, dst, 0o644)
	code, out, se = agentRun(t, append(env, "DELTASYNC_AGENT_TOKEN="+token), "sync", "-json", "-journal-dir", jdir, "-agent-pin", pin, url, pulled)
	if code != 0 {
		t.Fatalf("pull: exit %d: %s", code, se)
	}
	t.Logf("pull: %s", out)
	if got, _ := os.ReadFile(pulled); !bytes.Equal(got, src) {
		t.Fatal("the pulled file differs")
	}
}
