package emulate_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/manifold-build/manifold/assemble/testkit"
	"github.com/manifold-build/manifold/emulate"
	"github.com/manifold-build/manifold/emulate/platform"
)

func TestMain(m *testing.M) {
	emulate.Main()
	os.Exit(m.Run())
}

func mustPlatform(t *testing.T, s string) platform.Platform {
	t.Helper()
	p, err := platform.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, p platform.Platform, argv ...string) (string, *emulate.Result, error) {
	t.Helper()
	var out bytes.Buffer
	res, err := (&emulate.Sandbox{}).Run(context.Background(), emulate.Spec{
		Platform: p,
		Lower:    testkit.Layers(t, p.String()),
		Scratch:  t.TempDir(),
		Argv:     argv, Env: []string{"PATH=/bin:/sbin:/usr/bin"},
		Stdout: &out, Stderr: &out,
	})
	return out.String(), res, err
}

// Every platform manifold knows runs: natively, under the personality that
// makes amd64 a 386, or under qemu through a private binfmt_misc instance.
func TestEveryPlatformRuns(t *testing.T) {
	for _, p := range platform.Known() {
		t.Run(p.String(), func(t *testing.T) {
			out, res, err := run(t, p, "/bin/archinfo")
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out)
			}
			want := fmt.Sprintf("goarch=%s goarm=%s machine=%s ", p.Architecture, goarm(p), p.Machine())
			if !strings.HasPrefix(out, want) {
				t.Errorf("archinfo printed %q, want it to start %q", out, want)
			}
			if native := p.Architecture == "amd64" || p.Architecture == "386"; (res.Emulator == "") != native {
				t.Errorf("emulator %q for %s", res.Emulator, p)
			}
		})
	}
}

func goarm(p platform.Platform) string {
	if p.Architecture == "arm" {
		return strings.TrimPrefix(p.Variant, "v")
	}
	return "-"
}

func TestExitStatusAndSandbox(t *testing.T) {
	p := mustPlatform(t, "linux/arm64")
	for _, tc := range []struct {
		script    string
		code, sig int
		message   string
	}{
		{"exit 3", 3, 0, "exit status 3"},
		{"exit 243", 243, 0, "exit status 243"},
		{"kill -TERM $$", 128 + 15, 15, "killed by signal 15"},
	} {
		_, _, err := run(t, p, "sh", "-c", tc.script)
		var ee *emulate.ExitError
		if !errors.As(err, &ee) || ee.Code != tc.code || ee.Signal != tc.sig || err.Error() != tc.message {
			t.Errorf("%s gave %v (%+v), want %q", tc.script, err, ee, tc.message)
		}
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

// Where overlayfs cannot be mounted, the step runs on a tree that Unpack
// fills, and the result says so; without Unpack it is an error that says
// what failed.
func TestOverlayFailureFallsBackToUnpack(t *testing.T) {
	dir := t.TempDir()
	spec := emulate.Spec{
		Platform: mustPlatform(t, "linux/amd64"),
		Lower:    []string{filepath.Join(dir, "missing")},
		Scratch:  filepath.Join(dir, "scratch"),
		Argv:     []string{"sh", "-c", "echo hi > /made"}, Env: []string{"PATH=/bin"},
	}
	if _, err := (&emulate.Sandbox{}).Run(context.Background(), spec); err == nil || !strings.Contains(err.Error(), "mounting overlayfs") {
		t.Errorf("no fallback: error %v, want one about mounting overlayfs", err)
	}
	os.RemoveAll(spec.Scratch)
	spec.Unpack = func(d string) error { return os.CopyFS(d, os.DirFS(testkit.Layers(t, "linux/amd64")[0])) }
	var out bytes.Buffer
	spec.Stderr = &out
	res, err := (&emulate.Sandbox{}).Run(context.Background(), spec)
	if err != nil {
		t.Fatalf("with Unpack: %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(res.Rootfs, "made")); res.Upper != "" || string(data) != "hi\n" {
		t.Errorf("Upper %q, Rootfs %q holding %q; want the unpacked tree changed", res.Upper, res.Rootfs, data)
	}
	if !strings.Contains(out.String(), "running on a copy of the root filesystem") {
		t.Errorf("the step's stderr does not say it fell back: %q", out.String())
	}
}

// The upper directory holds the step's changes and of the sandbox's mount
// points only the empty /dev, /proc and /sys that BuildKit's steps leave
// when the image has none.
func TestUpperHoldsOnlyTheStepsChanges(t *testing.T) {
	out, res, err := run(t, mustPlatform(t, "linux/arm64"), "sh", "-c", "mkdir -p /srv && echo x > /srv/new && rm /bin/cat")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, gone := range []string{"etc/resolv.conf", "etc/hosts", "dev/pts", "dev/shm"} {
		if _, err := os.Lstat(filepath.Join(res.Upper, gone)); err == nil {
			t.Errorf("upper holds the sandbox's mount point %s", gone)
		}
	}
	for _, kept := range []string{"proc", "dev", "sys"} { // as BuildKit's steps keep them
		if fi, err := os.Lstat(filepath.Join(res.Upper, kept)); err != nil || !fi.IsDir() {
			t.Errorf("upper lacks the empty /%s a BuildKit step leaves: %v", kept, err)
		}
	}
	for _, kept := range []string{"srv/new", "bin/cat"} {
		if _, err := os.Lstat(filepath.Join(res.Upper, kept)); err != nil {
			t.Errorf("upper lacks the step's change %s: %v", kept, err)
		}
	}
}

// Threads that end take no sandbox with them. The init's parent-death
// signal follows the OS thread that started it, and Go ends a thread when
// a goroutine locked to it returns (as one that lowers its own priority
// does): the starting thread must outlive the init.
func TestSandboxOutlivesEndingThreads(t *testing.T) {
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() { // threads keep ending
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ended := make(chan struct{})
			go func() {
				runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
				close(ended)
			}()
			<-ended
		}
	}()
	defer func() { close(stop); <-stopped }()
	for i := range 20 {
		out, _, err := run(t, mustPlatform(t, "linux/amd64"), "sh", "-c", "sleep 0.05; echo ok")
		if err != nil || !strings.Contains(out, "ok") {
			t.Fatalf("run %d: %v\n%s", i, err, out)
		}
	}
}

// A stack of layers longer than mount(2)'s one page of options mounts.
func TestLongLayerStack(t *testing.T) {
	lower := testkit.Layers(t, "linux/amd64")
	base := filepath.Join(t.TempDir(), strings.Repeat("a-long-directory-name-", 5))
	for i := range 60 {
		d := filepath.Join(base, fmt.Sprintf("layer-%02d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(d, fmt.Sprintf("f%02d", i)), nil, 0o644)
		lower = append(lower, d)
	}
	var out bytes.Buffer
	_, err := (&emulate.Sandbox{}).Run(context.Background(), emulate.Spec{
		Platform: mustPlatform(t, "linux/amd64"),
		Lower:    lower, Scratch: t.TempDir(),
		Argv: []string{"sh", "-c", "ls / | grep -c '^f'"}, Env: []string{"PATH=/bin"},
		Stdout: &out, Stderr: &out,
	})
	if err != nil || out.String() != "60\n" {
		t.Errorf("run over %d layers: %v, printed %q; want 60 files", len(lower), err, out.String())
	}
}

// Every process of a step ends with it, even one left in the background.
func TestBackgroundProcessesEndWithTheStep(t *testing.T) {
	out, _, err := run(t, mustPlatform(t, "linux/amd64"), "sh", "-c", "sleep 271828 & echo started")
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
	out, _, err := run(t, mustPlatform(t, "linux/arm64"), "no-such-program")
	var ee *emulate.ExitError
	if !errors.As(err, &ee) || ee.Code != 127 || !strings.Contains(out, "no-such-program: executable file not found") {
		t.Errorf("got %v, output %q; want exit status 127 and a message", err, out)
	}
}

// By default a step has the host's network: it sees a socket the test
// listens on on the host's loopback; with "none" it has a network of its
// own, with no such socket.
func TestNetworkModes(t *testing.T) {
	l := testkit.Listen(t)
	port := fmt.Sprintf(":%04X ", l.Addr().(*net.TCPAddr).Port)
	look := "grep -q '" + port + "' /proc/net/tcp && echo seen || echo unseen"
	for network, want := range map[string]string{"": "seen", "none": "unseen"} {
		var out bytes.Buffer
		_, err := (&emulate.Sandbox{}).Run(context.Background(), emulate.Spec{
			Platform: mustPlatform(t, "linux/amd64"), Lower: testkit.Layers(t, "linux/amd64"),
			Scratch: t.TempDir(), Network: network,
			Argv: []string{"sh", "-c", look}, Env: []string{"PATH=/bin:/usr/bin"},
			Stdout: &out, Stderr: &out,
		})
		if err != nil || strings.TrimSpace(out.String()) != want {
			t.Errorf("network %q: %v, printed %q; want %q", network, err, out.String(), want)
		}
	}
}

// A step sees copies of the host's resolv.conf and hosts: even one that
// makes its mount writable again cannot change the host's files.
func TestStepCannotChangeHostFiles(t *testing.T) {
	before, err := os.ReadFile("/etc/hosts")
	testkit.Require(t, err == nil, "/etc/hosts on the host")
	out, _, err := run(t, mustPlatform(t, "linux/amd64"), "sh", "-c",
		"grep -q localhost /etc/hosts && echo seen; mount -o remount,rw,bind /etc/hosts && echo 127.0.0.9 evil >> /etc/hosts && echo wrote")
	if err != nil || !strings.Contains(out, "seen") || !strings.Contains(out, "wrote") {
		t.Fatalf("run: %v\n%s", err, out)
	}
	if after, _ := os.ReadFile("/etc/hosts"); string(after) != string(before) {
		t.Fatalf("the step changed the host's /etc/hosts:\n%s", after)
	}
}

// A step's mounts: a tmpfs, a read-only bind and a writable one; what the
// command writes in them reaches the host's directory or nothing, never
// the step's changes, and no mount point it needed is left there.
func TestMountsStayOutOfTheChanges(t *testing.T) {
	for _, plat := range []string{"linux/amd64", "linux/arm64"} {
		t.Run(plat, func(t *testing.T) {
			p := mustPlatform(t, plat)
			data, cache := t.TempDir(), t.TempDir()
			os.WriteFile(filepath.Join(data, "in"), []byte("from the host\n"), 0o644)
			secret := filepath.Join(t.TempDir(), "secret")
			os.WriteFile(secret, []byte("s3cret\n"), 0o600)
			var out bytes.Buffer
			res, err := (&emulate.Sandbox{}).Run(context.Background(), emulate.Spec{
				Platform: p,
				Lower:    testkit.Layers(t, p.String()),
				Scratch:  t.TempDir(),
				Mounts: []emulate.Mount{
					{Target: "/scratch", Size: 1 << 20},
					{Target: "/data/ro", Source: data, ReadOnly: true},
					{Target: "/root/.cache/x", Source: cache},
					{Target: "/run/secrets/token", Source: secret, File: true, ReadOnly: true},
				},
				Argv: []string{"/bin/sh", "-c", `echo t > /scratch/t && cat /data/ro/in && echo c > /root/.cache/x/c &&
cat /run/secrets/token && ! echo no 2>/dev/null > /data/ro/no && echo kept > /kept`},
				Env:    []string{"PATH=/bin:/sbin:/usr/bin"},
				Stdout: &out, Stderr: &out,
			})
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			if out.String() != "from the host\ns3cret\n" {
				t.Errorf("printed %q", out.String())
			}
			if got, _ := os.ReadFile(filepath.Join(cache, "c")); string(got) != "c\n" {
				t.Errorf("the writable bind holds %q, want the step's write", got)
			}
			for _, n := range []string{"scratch", "data", "root/.cache", "run/secrets"} {
				if _, err := os.Lstat(filepath.Join(res.Upper, n)); err == nil {
					t.Errorf("the step's changes hold /%s", n)
				}
			}
			if got, _ := os.ReadFile(filepath.Join(res.Upper, "kept")); string(got) != "kept\n" {
				t.Errorf("the step's own write is missing from its changes")
			}
		})
	}
}
