package platform

import (
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		variant  string
	}{
		{"linux/amd64", "linux/amd64", ""},
		{"amd64", "linux/amd64", ""},
		{"linux/x86_64", "linux/amd64", ""},
		{"linux/arm64", "linux/arm64", "v8"},
		{"linux/arm64/v8", "linux/arm64", "v8"},
		{"linux/aarch64", "linux/arm64", "v8"},
		{"linux/arm64/v9", "linux/arm64/v9", "v9"},
		{"linux/arm", "linux/arm/v7", "v7"},
		{"linux/arm/7", "linux/arm/v7", "v7"},
		{"linux/arm/v6", "linux/arm/v6", "v6"},
		{"linux/armhf", "linux/arm/v7", "v7"},
		{"linux/armel", "linux/arm/v6", "v6"},
		{"LINUX/i386", "linux/386", ""},
		{"linux/ppc64el", "linux/ppc64le", ""},
		{"linux/mips64el", "linux/mips64le", ""},
		{"linux/loongarch64", "linux/loong64", ""},
		{" linux/riscv64 ", "linux/riscv64", ""},
	} {
		p, err := Parse(tc.in)
		if err != nil || p.String() != tc.want || p.Variant != tc.variant {
			t.Errorf("Parse(%q) = %q (variant %q), %v; want %q (variant %q)", tc.in, p, p.Variant, err, tc.want, tc.variant)
		}
	}
	for _, bad := range []string{"", "/", "linux/", "linux/arm/v7/x", "windows/amd64", "/amd64"} {
		if p, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", bad, p)
		}
	}
}

func TestParseListDropsRepeats(t *testing.T) {
	ps, err := ParseList([]string{"linux/amd64,linux/arm64", "linux/arm64/v8", "linux/aarch64,linux/arm/v7"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.String())
	}
	if want := "linux/amd64 linux/arm64 linux/arm/v7"; strings.Join(got, " ") != want {
		t.Errorf("ParseList = %v, want %s", got, want)
	}
}

func TestMatches(t *testing.T) {
	for _, tc := range []struct {
		want string
		have v1.Platform
		ok   bool
	}{
		{"linux/arm64", v1.Platform{OS: "linux", Architecture: "arm64"}, true},
		{"linux/arm64", v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, true},
		{"linux/arm64/v8", v1.Platform{OS: "linux", Architecture: "aarch64"}, true},
		{"linux/arm", v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, true},
		{"linux/arm/v6", v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, false},
		{"linux/arm/v7", v1.Platform{OS: "linux", Architecture: "arm"}, true},
		{"linux/amd64", v1.Platform{OS: "windows", Architecture: "amd64"}, false},
		{"linux/386", v1.Platform{OS: "linux", Architecture: "amd64"}, false},
	} {
		p, err := Parse(tc.want)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Matches(tc.have); got != tc.ok {
			t.Errorf("%s matches %+v = %v, want %v", p, tc.have, got, tc.ok)
		}
	}
}

func TestOCIRoundTrip(t *testing.T) {
	for _, p := range Known() {
		if back := FromOCI(p.OCI()); back != p {
			t.Errorf("FromOCI(%s.OCI()) = %+v", p, back)
		}
		if q, err := Parse(p.String()); err != nil || q != p {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", p.String(), q, err, p)
		}
	}
}

func TestTargetVariant(t *testing.T) {
	for in, want := range map[string]string{"linux/arm64": "", "linux/arm/v7": "v7", "linux/arm/v6": "v6", "linux/amd64": "", "linux/arm64/v9": "v9"} {
		p, _ := Parse(in)
		if got := p.TargetVariant(); got != want {
			t.Errorf("%s: TargetVariant = %q, want %q", in, got, want)
		}
	}
}

func TestEveryKnownPlatformHasAnEmulator(t *testing.T) {
	want := map[string]string{
		"linux/amd64": "x86_64", "linux/arm64": "aarch64", "linux/arm/v7": "arm", "linux/arm/v6": "arm",
		"linux/ppc64le": "ppc64le", "linux/s390x": "s390x", "linux/386": "i386",
		"linux/riscv64": "riscv64", "linux/mips64le": "mips64el", "linux/loong64": "loongarch64",
	}
	if len(Known()) != len(want) {
		t.Errorf("Known() has %d platforms, the table here %d", len(Known()), len(want))
	}
	for _, p := range Known() {
		q, ok := p.Qemu()
		if !ok || q != want[p.String()] || p.Machine() == "" {
			t.Errorf("%s: Qemu() = %q, %v; Machine() = %q; want %q", p, q, ok, p.Machine(), want[p.String()])
		}
	}
	if _, ok := (Platform{OS: "linux", Architecture: "sparc64"}).Qemu(); ok {
		t.Error("sparc64 has an emulator, want none")
	}
}

func TestHost(t *testing.T) {
	h := Host()
	if h.OS != "linux" || h != FromOCI(h.OCI()) {
		t.Errorf("Host() = %+v, not normalised", h)
	}
}
