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
