package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/assemble/testkit"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// started is a manifold process the test will interrupt.
type started struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	work string // its TMPDIR and cache
}

func startManifold(t *testing.T, bin, work string, args ...string) *started {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "TMPDIR="+work, "XDG_CACHE_HOME="+filepath.Join(work, "cache"),
		"MANIFOLD_STORE="+filepath.Join(work, "store"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &started{cmd, out, work}
}

// waitFor waits until the output holds marker n times.
func (s *started) waitFor(t *testing.T, marker string, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for strings.Count(s.out.String(), marker) < n {
		if time.Now().After(deadline) {
			s.cmd.Process.Kill()
			t.Fatalf("no %q after 2 minutes:\n%s", marker, s.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// interrupt sends sigs and returns the exit status.
func (s *started) interrupt(t *testing.T, sigs ...syscall.Signal) int {
	t.Helper()
	for _, sig := range sigs {
		s.cmd.Process.Signal(sig)
	}
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		s.cmd.Process.Kill()
		t.Fatalf("still running a minute after %v:\n%s", sigs, s.out)
	}
	return s.cmd.ProcessState.ExitCode()
}

// leftovers lists processes whose command line holds marker, mounts that
// name dir, and files under dir other than the cache's kept ones.
func leftovers(t *testing.T, marker, dir string) []string {
	t.Helper()
	var out []string
	time.Sleep(200 * time.Millisecond) // a killed process's last moments
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmdline, _ := os.ReadFile(p)
		if bytes.Contains(cmdline, []byte(marker)) {
			out = append(out, fmt.Sprintf("process %s: %q", p, cmdline))
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, dir) {
			out = append(out, "mount: "+l)
		}
	}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		rel, _ := filepath.Rel(dir, p)
		switch {
		case err != nil || rel == "." || rel == "manifold" || rel == "cache" || rel == "store":
			return nil
		case strings.HasPrefix(rel, "cache/manifold/") && !strings.HasPrefix(rel, "cache/manifold/tmp/"):
			return filepath.SkipDir // the caches keep what they finished
		case rel == "cache/manifold" || rel == "cache/manifold/tmp":
			return nil
		}
		out = append(out, "left: "+rel)
		if d.IsDir() {
			return filepath.SkipDir
		}
		return nil
	})
	return out
}

func buildManifold(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "manifold")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// SIGINT or SIGTERM during a two-platform build whose RUN step runs
// (under qemu for arm64), or during manifold run: every sandboxed process
// stops, no mount or scratch directory is left, no tag is made, and the
// exit status is 130 or 143; a second signal ends it at once.
func TestInterruptsLeaveNothing(t *testing.T) {
	_, err := os.Stat("/usr/bin/qemu-aarch64-static")
	testkit.Require(t, err == nil, "qemu-user-static, to interrupt an emulated step")
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	bin := buildManifold(t, t.TempDir())
	for i, tc := range []struct {
		name string
		sigs []syscall.Signal
		want int
	}{
		{"sigint", []syscall.Signal{syscall.SIGINT}, 130},
		{"sigterm", []syscall.Signal{syscall.SIGTERM}, 143},
		{"twice", []syscall.Signal{syscall.SIGINT, syscall.SIGINT}, 130},
	} {
		t.Run("build-"+tc.name, func(t *testing.T) {
			work := t.TempDir()
			marker := fmt.Sprint(61000 + i)
			tag := host + "/app/interrupted:" + tc.name
			s := startManifold(t, bin, work, "build", "--platform", "linux/amd64,linux/arm64", "-t", tag, "--push",
				contextDir(t, fmt.Sprintf("FROM %s\nRUN echo step-$((6*7))-started $(uname -m) && sleep %s\n", base, marker)))
			s.waitFor(t, "step-42-started", 2) // the step's output, not its line
			code := s.interrupt(t, tc.sigs...)
			if code != tc.want || !strings.Contains(s.out.String(), "interrupted (SIG") && tc.name != "twice" {
				t.Errorf("exit %d, want %d and what stopped it:\n%s", code, tc.want, s.out)
			}
			if left := leftovers(t, marker, work); len(left) > 0 && tc.name != "twice" {
				t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
			} else if len(left) > 0 {
				// Exiting at once leaves scratch files, never processes or mounts.
				for _, l := range left {
					if !strings.HasPrefix(l, "left: ") {
						t.Errorf("left behind: %s", l)
					}
				}
			}
			if _, err := remote.Head(mustRef(t, tag)); err == nil {
				t.Error("the interrupted build made its tag")
			}
		})
	}
	t.Run("run-sigterm", func(t *testing.T) {
		work := t.TempDir()
		s := startManifold(t, bin, work, "run", "--platform", "linux/arm64", base.String(), "sh", "-c", "echo run-$((6*7))-started; sleep 61900")
		s.waitFor(t, "run-42-started", 1)
		if code := s.interrupt(t, syscall.SIGTERM); code != 143 {
			t.Errorf("exit %d, want 143:\n%s", code, s.out)
		}
		if left := leftovers(t, "61900", work); len(left) > 0 {
			t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
		}
	})
}

// --step-timeout kills a step that hangs, and says so at its line.
func TestStepTimeout(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/arm64")
	code, _, errOut := manifold(t, "build", "--platform", "linux/arm64", "--step-timeout", "2s",
		contextDir(t, fmt.Sprintf("FROM %s\nRUN sleep 61950\n", base)))
	if code != 1 || !strings.Contains(errOut, "Dockerfile:2") || !strings.Contains(errOut, "killed after 2s (--step-timeout)") {
		t.Errorf("exit %d, %q; want 1 and the step's line and its timeout", code, errOut)
	}
	if left := leftovers(t, "61950", t.TempDir()); len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
}
