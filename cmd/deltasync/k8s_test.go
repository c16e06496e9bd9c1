package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// manifestJob decodes docs/deltasync-indexed-job.yaml strictly with
// Kubernetes' own types (an unknown field is an error) and returns the Job
// and the ConfigMap.
func manifestJob(t *testing.T) (*batchv1.Job, *corev1.ConfigMap) {
	t.Helper()
	_, here, _, _ := runtime.Caller(0) // this file: cmd/deltasync/k8s_test.go, whatever the working directory
	b, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "..", "docs", "deltasync-indexed-job.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var job *batchv1.Job
	var cm *corev1.ConfigMap
	for i, doc := range strings.Split(string(b), "\n---\n") {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var into any
		switch meta.Kind {
		case "Job":
			job = &batchv1.Job{}
			into = job
		case "ConfigMap":
			cm = &corev1.ConfigMap{}
			into = cm
		case "PersistentVolumeClaim":
			into = &corev1.PersistentVolumeClaim{}
		default:
			t.Fatalf("document %d: unexpected kind %q", i, meta.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
			t.Fatalf("document %d (%s) is not valid for Kubernetes: %v", i, meta.Kind, err)
		}
	}
	if job == nil || cm == nil {
		t.Fatal("the manifest has no Job or no ConfigMap")
	}
	return job, cm
}

// TestIndexedJobManifest checks the manifest as Kubernetes would read it,
// then runs its container's exact command for every index at once, as
// separate processes with JOB_COMPLETION_INDEX set (the Job's
// parallelism), on local images named by a fleet file in place of the
// ConfigMap's, with the volumes' mount paths mapped to folders here. One
// index is killed with SIGKILL mid-run and run again, as Kubernetes
// retries it; every target ends identical to its source.
func TestIndexedJobManifest(t *testing.T) {
	job, cm := manifestJob(t)
	s := job.Spec
	if s.CompletionMode == nil || *s.CompletionMode != batchv1.IndexedCompletion {
		t.Fatalf("completionMode %v, want Indexed", s.CompletionMode)
	}
	if s.BackoffLimitPerIndex == nil || *s.BackoffLimitPerIndex < 1 {
		t.Fatal("no backoffLimitPerIndex: a failed index would not be retried on its own")
	}
	fleet, ok := cm.Data["disks.txt"]
	if !ok {
		t.Fatal("the ConfigMap has no disks.txt")
	}
	lines, err := parseFleet(strings.NewReader(fleet), "the ConfigMap's disks.txt")
	if err != nil {
		t.Fatal(err)
	}
	if s.Completions == nil || int(*s.Completions) != len(lines) {
		t.Fatalf("completions %v for %d disks in disks.txt", s.Completions, len(lines))
	}
	mounts := map[string]string{} // mount path -> volume
	c := s.Template.Spec.Containers[0]
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	vols := map[string]bool{}
	for _, v := range s.Template.Spec.Volumes {
		vols[v.Name] = true
	}
	for path, name := range mounts {
		if !vols[name] {
			t.Fatalf("mount %s names volume %q, which the pod does not have", path, name)
		}
	}
	argv := append(append([]string(nil), c.Command...), c.Args...)
	if len(argv) == 0 || argv[0] != "deltasync" {
		t.Fatalf("the container runs %v, want deltasync itself (no shell)", argv)
	}
	// The volumes, here.
	dir := t.TempDir()
	local := map[string]string{}
	for path := range mounts {
		local[path] = filepath.Join(dir, strings.Trim(path, "/"))
		os.MkdirAll(local[path], 0o700)
	}
	mapped := func(a string) string {
		for path, l := range local {
			if a == path || strings.HasPrefix(a, path+"/") {
				return l + strings.TrimPrefix(a, path)
			}
		}
		return a
	}
	// The fleet: local images in place of the ConfigMap's blobs.
	rng := newRand(t)
	var srcs [][]byte
	var ft strings.Builder
	for i := range lines {
		s, d := filepath.Join(dir, fmt.Sprintf("src%d.img", i)), filepath.Join(dir, fmt.Sprintf("dst%d.img", i))
		b := randomBytes(rng, 16*miB)
		writeFile(t, s, b)
		old := append([]byte(nil), b...)
		change(rng, old, 40, 4)
		writeFile(t, d, old)
		srcs = append(srcs, b)
		fmt.Fprintf(&ft, "%s %s\n", s, d)
	}
	var cmConfig string
	for path, name := range mounts {
		if name == "config" {
			cmConfig = local[path]
		}
	}
	os.WriteFile(filepath.Join(cmConfig, "disks.txt"), []byte(ft.String()), 0o600)
	run := func(i int, bw string) *exec.Cmd {
		args := []string{}
		for _, a := range argv[1:] {
			args = append(args, mapped(a))
		}
		if bw != "" {
			args = append(args, "-bwlimit", bw)
		}
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "XDG_STATE_HOME="+stateHome(t), fmt.Sprintf("JOB_COMPLETION_INDEX=%d", i))
		return cmd
	}
	// Every index at once; index 1 slowed, and killed mid-run.
	var wg sync.WaitGroup
	errs := make([]error, len(lines))
	outs := make([]bytes.Buffer, len(lines))
	killed := run(1, "2M")
	killed.Stderr = &outs[1]
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	for i := range lines {
		if i == 1 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := run(i, "")
			cmd.Stderr = &outs[i]
			errs[i] = cmd.Run()
		}()
	}
	time.Sleep(400 * time.Millisecond)
	killed.Process.Kill()
	killed.Wait()
	wg.Wait()
	for i, err := range errs {
		if i != 1 && err != nil {
			t.Fatalf("index %d: %v\n%s", i, err, outs[i].String())
		}
	}
	// Kubernetes retries the killed index: the same command again.
	retry := run(1, "")
	var rout bytes.Buffer
	retry.Stderr = &rout
	if err := retry.Run(); err != nil {
		t.Fatalf("index 1, retried: %v\n%s", err, rout.String())
	}
	if !strings.Contains(rout.String(), "index 1/3") {
		t.Errorf("the retried index's summary does not name it: %s", rout.String())
	}
	for i := range lines {
		sameBytes(t, fmt.Sprintf("index %d's target", i), filepath.Join(dir, fmt.Sprintf("dst%d.img", i)), srcs[i])
	}
}
