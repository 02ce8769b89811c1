package emulate_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/manifold-build/manifold/emulate"
	"github.com/manifold-build/manifold/registry/registrytest"
)

func TestMain(m *testing.M) {
	emulate.Main()
	os.Exit(m.Run())
}

// fixture returns the busybox root filesystem layers for a Go arch.
func fixture(t *testing.T, arch string) []string {
	t.Helper()
	dir := os.Getenv("MANIFOLD_FIXTURES")
	if dir == "" {
		dir = "/var/cache/manifold-fixtures"
	}
	main := filepath.Join(dir, arch, "main")
	_, err := os.Stat(filepath.Join(main, "bin", "busybox"))
	registrytest.Require(t, err == nil, "busybox fixture in %s (testdata/fixtures/busybox-rootfs.sh)", dir)
	return []string{main, filepath.Join(dir, arch, "etc")}
}

func run(t *testing.T, p emulate.Platform, argv ...string) (string, *emulate.Result, error) {
	t.Helper()
	up := t.TempDir()
	var out bytes.Buffer
	res, err := (&emulate.Sandbox{}).Run(context.Background(), emulate.Spec{
		Platform: p,
		Lower:    fixture(t, p.Arch),
		Upper:    filepath.Join(up, "upper"), Work: filepath.Join(up, "work"),
		Argv: argv, Env: []string{"PATH=/bin:/sbin:/usr/bin"},
		Stdout: &out, Stderr: &out,
	})
	return out.String(), res, err
}

func TestUnameOnEveryPlatform(t *testing.T) {
	for _, tc := range []struct {
		p    emulate.Platform
		want string
	}{
		{emulate.Platform{Arch: "amd64"}, "x86_64"},
		{emulate.Platform{Arch: "386"}, "i686"},
		{emulate.Platform{Arch: "arm64", Variant: "v8"}, "aarch64"},
		{emulate.Platform{Arch: "arm", Variant: "v7"}, "armv7l"},
		{emulate.Platform{Arch: "ppc64le"}, "ppc64le"},
		{emulate.Platform{Arch: "s390x"}, "s390x"},
	} {
		t.Run(tc.p.String(), func(t *testing.T) {
			out, res, err := run(t, tc.p, "uname", "-m")
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out)
			}
			if strings.TrimSpace(out) != tc.want {
				t.Errorf("uname -m printed %q, want %q", out, tc.want)
			}
			if (res.Emulator == "") != (tc.p.Arch == "amd64" || tc.p.Arch == "386") {
				t.Errorf("emulator %q for %s", res.Emulator, tc.p)
			}
		})
	}
}

func TestExitStatusAndSandbox(t *testing.T) {
	p := emulate.Platform{Arch: "arm64", Variant: "v8"}
	_, _, err := run(t, p, "sh", "-c", "exit 3")
	var ee *emulate.ExitError
	if !errors.As(err, &ee) || ee.Code != 3 {
		t.Fatalf("exit 3 gave %v", err)
	}
	out, _, err := run(t, p, "sh", "-c", "echo $$; hostname; ls /dev; (echo x >> /etc/resolv.conf) 2>/dev/null && echo writable; cat /proc/1/cmdline | tr '\\0' ' '")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"manifold", "null", "urandom", "pts", "shm"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "writable") {
		t.Errorf("/etc/resolv.conf is writable:\n%s", out)
	}
}

// An overlay that cannot be mounted is reported as such, so that callers
// can fall back to comparing trees.
func TestOverlayFailureIsTyped(t *testing.T) {
	up := t.TempDir()
	_, err := (&emulate.Sandbox{}).Run(context.Background(), emulate.Spec{
		Platform: emulate.Platform{Arch: "amd64"},
		Lower:    []string{filepath.Join(up, "missing")},
		Upper:    filepath.Join(up, "upper"), Work: filepath.Join(up, "work"),
		Argv: []string{"true"},
	})
	var oe *emulate.OverlayError
	if !errors.As(err, &oe) {
		t.Errorf("error %v (%T), want an *emulate.OverlayError", err, err)
	}
}

// A stack of layers longer than mount(2)'s one page of options mounts.
func TestLongLayerStack(t *testing.T) {
	lower := fixture(t, "amd64")
	base := filepath.Join(t.TempDir(), strings.Repeat("a-long-directory-name-", 5))
	for i := range 60 {
		d := filepath.Join(base, fmt.Sprintf("layer-%02d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(d, fmt.Sprintf("f%02d", i)), nil, 0o644)
		lower = append(lower, d)
	}
	up := t.TempDir()
	var out bytes.Buffer
	_, err := (&emulate.Sandbox{}).Run(context.Background(), emulate.Spec{
		Platform: emulate.Platform{Arch: "amd64"},
		Lower:    lower, Upper: filepath.Join(up, "upper"), Work: filepath.Join(up, "work"),
		Argv: []string{"sh", "-c", "ls / | grep -c '^f'"}, Env: []string{"PATH=/bin"},
		Stdout: &out, Stderr: &out,
	})
	if err != nil || out.String() != "60\n" {
		t.Errorf("run over %d layers: %v, printed %q; want 60 files", len(lower), err, out.String())
	}
}

// Every process of a step ends with it, even one left in the background.
func TestBackgroundProcessesEndWithTheStep(t *testing.T) {
	out, _, err := run(t, emulate.Platform{Arch: "amd64"}, "sh", "-c", "sleep 271828 & echo started")
	if err != nil || out != "started\n" {
		t.Fatalf("run: %v, %q", err, out)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if data, _ := os.ReadFile(p); strings.Contains(string(data), "271828") {
			t.Errorf("a process of the step is still running: %s %q", p, data)
		}
	}
}

func TestMissingProgramExits127(t *testing.T) {
	out, _, err := run(t, emulate.Platform{Arch: "arm64"}, "no-such-program")
	var ee *emulate.ExitError
	if !errors.As(err, &ee) || ee.Code != 127 || !strings.Contains(out, "no-such-program: executable file not found") {
		t.Errorf("got %v, output %q; want exit status 127 and a message", err, out)
	}
}

// By default a step has the host's network; with "none", only loopback.
func TestNetworkModes(t *testing.T) {
	host, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	hostIfaces := strings.Count(string(host), ":")
	for network, want := range map[string]int{"": hostIfaces, "none": 1} {
		up := t.TempDir()
		var out bytes.Buffer
		_, err := (&emulate.Sandbox{}).Run(context.Background(), emulate.Spec{
			Platform: emulate.Platform{Arch: "amd64"}, Lower: fixture(t, "amd64"),
			Upper: filepath.Join(up, "u"), Work: filepath.Join(up, "w"), Network: network,
			Argv: []string{"sh", "-c", "grep -c : /proc/net/dev"}, Env: []string{"PATH=/bin:/usr/bin"},
			Stdout: &out, Stderr: &out,
		})
		if err != nil || strings.TrimSpace(out.String()) != fmt.Sprint(want) {
			t.Errorf("network %q: %v, %q interfaces; want %d", network, err, out.String(), want)
		}
	}
}

// A step sees copies of the host's resolv.conf and hosts: even one that
// makes its mount writable again cannot change the host's files.
func TestStepCannotChangeHostFiles(t *testing.T) {
	before, err := os.ReadFile("/etc/hosts")
	registrytest.Require(t, err == nil, "/etc/hosts on the host")
	out, _, err := run(t, emulate.Platform{Arch: "amd64"}, "sh", "-c",
		"grep -q localhost /etc/hosts && echo seen; mount -o remount,rw,bind /etc/hosts && echo 127.0.0.9 evil >> /etc/hosts && echo wrote")
	if err != nil || !strings.Contains(out, "seen") || !strings.Contains(out, "wrote") {
		t.Fatalf("run: %v\n%s", err, out)
	}
	if after, _ := os.ReadFile("/etc/hosts"); string(after) != string(before) {
		t.Fatalf("the step changed the host's /etc/hosts:\n%s", after)
	}
}
