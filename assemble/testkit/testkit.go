// Package testkit is what every package's tests share: prerequisites that
// skip on a laptop but fail in CI, a lock for tests that change host-wide
// state, loopback listeners, and the fixture root filesystems. It imports
// nothing of manifold's.
package testkit

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
)

// InCI tells whether the tests run in CI, where a missing prerequisite is a
// failure and never a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require skips the test when ok is false, or fails it in CI.
func Require(t testing.TB, ok bool, format string, a ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, a...)
	if InCI() {
		t.Fatalf("prerequisite missing in CI: %s", msg)
	}
	t.Skipf("prerequisite missing: %s", msg)
}

// RequireRoot requires root, for tests that mount or register binfmt
// handlers on the host.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "root, %s", why)
}

// LockHost holds a lock, shared by every test process of the machine, for
// the rest of the test: for tests that change host-wide state (the host's
// binfmt_misc, its users) and must not overlap with tests of other
// packages.
func LockHost(t testing.TB, name string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "manifold-test-"+name+".lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
}

// Listen opens a listener on a free loopback port, closed with the test:
// hand it to the server, so that no other process can take the port in
// between.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// RepoRoot is the top of the manifold source tree.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// FixtureNames are the folders of the fixture's platforms, as
// ${TARGETARCH}${TARGETVARIANT} names them, by platform.
var FixtureNames = map[string]string{
	"linux/amd64": "amd64", "linux/arm64": "arm64", "linux/arm/v7": "armv7", "linux/arm/v6": "armv6",
	"linux/ppc64le": "ppc64le", "linux/s390x": "s390x", "linux/386": "386",
	"linux/mips64le": "mips64le", "linux/riscv64": "riscv64", "linux/loong64": "loong64",
}

var fixtureOnce sync.Once

// FixtureDir returns the folder of per-platform root filesystems that
// testdata/fixtures/busybox-rootfs.sh makes ($MANIFOLD_FIXTURES, default
// /var/cache/manifold-fixtures), running the script when they are missing.
func FixtureDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("MANIFOLD_FIXTURES")
	if dir == "" {
		dir = "/var/cache/manifold-fixtures"
	}
	ready := func() bool {
		for _, n := range FixtureNames {
			if _, err := os.Stat(filepath.Join(dir, n, "main", "bin", "archinfo")); err != nil {
				return false
			}
		}
		return true
	}
	fixtureOnce.Do(func() {
		if ready() {
			return
		}
		script := filepath.Join(RepoRoot(), "testdata", "fixtures", "busybox-rootfs.sh")
		if out, err := exec.Command(script, dir).CombinedOutput(); err != nil {
			t.Logf("%s: %v\n%s", script, err, out)
		}
	})
	Require(t, ready(), "fixture root filesystems in %s (run testdata/fixtures/busybox-rootfs.sh %s as root)", dir, dir)
	return dir
}

// Layers returns the two fixture layer directories of a platform
// ("linux/arm64"), bottom first, in overlayfs's format.
func Layers(t testing.TB, platform string) []string {
	t.Helper()
	root := filepath.Join(FixtureDir(t), FixtureNames[platform])
	return []string{filepath.Join(root, "main"), filepath.Join(root, "etc")}
}
