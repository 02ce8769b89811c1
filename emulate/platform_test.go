package emulate

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/manifold-build/manifold/assemble/testkit"
	"github.com/manifold-build/manifold/emulate/platform"
)

func mustPlatform(t *testing.T, s string) platform.Platform {
	t.Helper()
	p, err := platform.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The table's magic and mask agree with what Debian's qemu-user-static
// registers, for every platform manifold knows.
func TestEmulatorTableMatchesDebian(t *testing.T) {
	checked := 0
	for _, p := range platform.Known() {
		ex, err := emulatorFor(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		data, err := os.ReadFile(filepath.Join("/usr/lib/binfmt.d", "qemu-"+ex.emu.qemu+".conf"))
		if err != nil {
			continue // Debian registers no handler for the host's own family
		}
		f := strings.Split(strings.TrimSpace(string(data)), ":")
		if len(f) < 7 || f[4] != ex.emu.magic || f[5] != ex.emu.mask {
			t.Errorf("%s: Debian registers magic %s mask %s; the table has %s %s", p, f[4], f[5], ex.emu.magic, ex.emu.mask)
		}
		checked++
	}
	testkit.Require(t, checked >= len(platform.Known())-2, "Debian's qemu-user-static (its /usr/lib/binfmt.d/qemu-*.conf)")
}

func TestMissingQemuNamesWhatToInstall(t *testing.T) {
	s := &Sandbox{QemuDir: t.TempDir()}
	_, err := s.Run(context.Background(), Spec{Platform: mustPlatform(t, "linux/s390x"), Rootfs: t.TempDir(), Argv: []string{"true"}})
	for _, want := range []string{"linux/s390x", "qemu-s390x-static", "apt-get install qemu-user-static"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %q", err, want)
		}
	}
}

func TestPlanNativeAndEmulated(t *testing.T) {
	for _, tc := range []struct {
		host, p string
		native  bool
		pers    int
		qemu    string
	}{
		{"linux/amd64", "linux/amd64", true, 0, ""},
		{"linux/amd64", "linux/386", true, perLinux32, ""},
		{"linux/amd64", "linux/arm64", false, 0, "aarch64"},
		{"linux/arm64", "linux/amd64", false, 0, "x86_64"},
		{"linux/amd64", "linux/arm/v6", false, 0, "arm"},
		{"linux/amd64", "linux/riscv64", false, 0, "riscv64"},
		{"linux/amd64", "linux/mips64le", false, 0, "mips64el"},
		{"linux/amd64", "linux/loong64", false, 0, "loongarch64"},
	} {
		got, err := plan(mustPlatform(t, tc.host), mustPlatform(t, tc.p))
		if err != nil || got.native != tc.native || got.personality != tc.pers || got.emu.qemu != tc.qemu {
			t.Errorf("plan(%s, %s) = %+v, %v; want native %v, personality %d, qemu %q", tc.host, tc.p, got, err, tc.native, tc.pers, tc.qemu)
		}
	}
	if _, err := plan(mustPlatform(t, "linux/amd64"), platform.Platform{OS: "linux", Architecture: "sparc64"}); err == nil {
		t.Error("sparc64 planned, want an error")
	}
}

// With HostBinfmt, root registers qemu in the host's binfmt_misc for the
// step and removes it afterwards, also when the run fails before the step
// starts.
func TestHostBinfmtRegistration(t *testing.T) {
	testkit.RequireRoot(t, "to register in the host's binfmt_misc")
	testkit.LockHost(t, "binfmt")
	arm64 := mustPlatform(t, "linux/arm64")
	ex, _ := emulatorFor(arm64)
	if name, ok := hostHandler(ex.emu); ok {
		p := filepath.Join(binfmtDir, name)
		os.WriteFile(p, []byte("0"), 0) // off for the test, so that one is registered
		defer os.WriteFile(p, []byte("1"), 0)
	}
	spec := Spec{
		Platform: arm64, Lower: testkit.Layers(t, "linux/arm64"),
		Argv: []string{"uname", "-m"}, Env: []string{"PATH=/bin"},
	}
	if _, err := (&Sandbox{HostBinfmt: true}).Run(context.Background(), spec); err == nil {
		t.Fatal("a run without a scratch directory succeeded")
	}
	noneLeft(t)
	var out strings.Builder
	spec.Scratch, spec.Stdout, spec.Stderr = t.TempDir(), &out, &out
	_, err := (&Sandbox{HostBinfmt: true}).Run(context.Background(), spec)
	if err != nil || out.String() != "aarch64\n" {
		t.Fatalf("uname -m under a host registration: %v, %q", err, out.String())
	}
	noneLeft(t)
}

func noneLeft(t *testing.T) {
	t.Helper()
	entries, _ := os.ReadDir(binfmtDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "manifold-") {
			t.Errorf("host registration %s left behind", e.Name())
		}
	}
}

// The one passwd/group parser resolves USER and --chown as Docker does.
func TestUsersLookup(t *testing.T) {
	u := ParseUsers([]byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n# comment\nshort:x:5\n"),
		[]byte("root:x:0:\nstaff:x:50:app,other\napp:x:1000:\nwheel:x:10:app\n"))
	for _, tc := range []struct {
		spec    string
		numeric bool
		want    User
		err     string
	}{
		{"app", false, User{1000, 1000, []int{1000, 50, 10}, "/home/app"}, ""},
		{"1000", false, User{1000, 1000, []int{1000, 50, 10}, "/home/app"}, ""},
		{"app:staff", false, User{1000, 50, []int{50}, "/home/app"}, ""},
		{"app:7", false, User{1000, 7, []int{7}, "/home/app"}, ""},
		{"4242", false, User{4242, 0, []int{0}, ""}, ""},
		{"4242", true, User{4242, 4242, []int{4242}, ""}, ""},
		{"4242:4343", true, User{4242, 4343, []int{4343}, ""}, ""},
		{"1000", true, User{1000, 1000, []int{1000, 50, 10}, ""}, ""},
		{"app", true, User{1000, 1000, []int{1000, 50, 10}, "/home/app"}, ""},
		{"ghost", false, User{}, "unable to find user ghost"},
		{"app:ghosts", false, User{}, "unable to find group ghosts"},
	} {
		got, err := u.Lookup(tc.spec, tc.numeric)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Lookup(%q) = %+v, %v; want error %q", tc.spec, got, err, tc.err)
			}
			continue
		}
		if err != nil || got.UID != tc.want.UID || got.GID != tc.want.GID || got.Home != tc.want.Home || !slices.Equal(got.Groups, tc.want.Groups) {
			t.Errorf("Lookup(%q, %v) = %+v, %v; want %+v", tc.spec, tc.numeric, got, err, tc.want)
		}
	}
}
