package emulate

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/manifold-build/manifold/registry/registrytest"
)

// The table's magic and mask agree with what Debian's qemu-user-static
// registers, where the package is installed.
func TestEmulatorTableMatchesDebian(t *testing.T) {
	checked := 0
	for arch, emu := range emulators {
		data, err := os.ReadFile(filepath.Join("/usr/lib/binfmt.d", "qemu-"+emu.qemu+".conf"))
		if err != nil {
			continue // Debian registers no handler for the host's own family
		}
		f := strings.Split(strings.TrimSpace(string(data)), ":")
		if len(f) < 7 || f[4] != emu.magic || f[5] != emu.mask {
			t.Errorf("%s: Debian registers magic %s mask %s; the table has %s %s", arch, f[4], f[5], emu.magic, emu.mask)
		}
		checked++
	}
	registrytest.Require(t, checked > 0, "Debian's qemu-user-static (its /usr/lib/binfmt.d/qemu-*.conf)")
}

func TestMissingQemuNamesWhatToInstall(t *testing.T) {
	s := &Sandbox{QemuDir: t.TempDir()}
	_, err := s.Run(context.Background(), Spec{Platform: Platform{Arch: "s390x"}, Rootfs: t.TempDir(), Argv: []string{"true"}})
	for _, want := range []string{"linux/s390x", "qemu-s390x-static", "apt-get install qemu-user-static"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %q", err, want)
		}
	}
}

func TestPlanNativeAndEmulated(t *testing.T) {
	for _, tc := range []struct {
		host string
		p    Platform
		want execution
	}{
		{"amd64", Platform{Arch: "amd64"}, execution{native: true}},
		{"amd64", Platform{Arch: "386"}, execution{native: true, personality: perLinux32}},
		{"amd64", Platform{Arch: "arm64"}, execution{emu: emulators["arm64"]}},
		{"arm64", Platform{Arch: "amd64"}, execution{emu: emulators["amd64"]}},
		{"amd64", Platform{Arch: "riscv64"}, execution{emu: emulators["riscv64"]}},
	} {
		got, err := plan(tc.host, tc.p)
		if err != nil || got != tc.want {
			t.Errorf("plan(%s, %s) = %+v, %v; want %+v", tc.host, tc.p, got, err, tc.want)
		}
	}
	if _, err := plan("amd64", Platform{Arch: "sparc64"}); err == nil {
		t.Error("sparc64 planned, want an error")
	}
}

// With HostBinfmt, root registers qemu in the host's binfmt_misc for the
// step and removes it afterwards.
func TestHostBinfmtRegistration(t *testing.T) {
	registrytest.Require(t, os.Geteuid() == 0, "root, to register in the host's binfmt_misc")
	registrytest.LockHost(t, "binfmt")
	emu := emulators["arm64"]
	if name, ok := hostHandler(emu); ok {
		p := filepath.Join(binfmtDir, name)
		os.WriteFile(p, []byte("0"), 0) // off for the test, so that one is registered
		defer os.WriteFile(p, []byte("1"), 0)
	}
	lower := []string{filepath.Join(fixtureDir(t), "arm64", "main"), filepath.Join(fixtureDir(t), "arm64", "etc")}
	up := t.TempDir()
	var out strings.Builder
	_, err := (&Sandbox{HostBinfmt: true}).Run(context.Background(), Spec{
		Platform: Platform{Arch: "arm64"}, Lower: lower,
		Upper: filepath.Join(up, "u"), Work: filepath.Join(up, "w"),
		Argv: []string{"uname", "-m"}, Env: []string{"PATH=/bin"}, Stdout: &out, Stderr: &out,
	})
	if err != nil || out.String() != "aarch64\n" {
		t.Fatalf("uname -m under a host registration: %v, %q", err, out.String())
	}
	entries, _ := os.ReadDir(binfmtDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "manifold-") {
			t.Errorf("host registration %s left behind", e.Name())
		}
	}
}

func fixtureDir(t *testing.T) string {
	dir := os.Getenv("MANIFOLD_FIXTURES")
	if dir == "" {
		dir = "/var/cache/manifold-fixtures"
	}
	_, err := os.Stat(filepath.Join(dir, "arm64", "main", "bin", "busybox"))
	registrytest.Require(t, err == nil, "busybox fixture in %s", dir)
	return dir
}
