// Package platform is manifold's one vocabulary for platforms: parsing and
// normalising "linux/arm64" and its aliases, formatting as Docker does,
// matching index entries, the automatic TARGET*/BUILD* values, the host's
// platform, and the qemu-user-static binary that runs a foreign one.
//
// A Platform made by this package is always normalised, so two platforms
// that Docker would match are equal with ==, and a Platform can key a map.
// The package imports nothing of manifold's: everyone may import it.
package platform

import (
	"fmt"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Platform is a Linux platform in OCI's terms: GOARCH architecture names,
// with the variant arm and arm64 carry (v7 and v8 unless said otherwise).
type Platform struct {
	OS           string // always "linux" from Parse
	Architecture string // amd64, arm64, arm, 386, ppc64le, s390x, riscv64, ...
	Variant      string // v6, v7 (arm); v8 (arm64); "" otherwise
}

// Parse reads "os/arch[/variant]", or just "arch" (meaning linux), and
// normalises it as Docker does: "linux/aarch64" is linux/arm64/v8.
func Parse(s string) (Platform, error) {
	parts := strings.Split(strings.TrimSpace(s), "/")
	if len(parts) == 1 && parts[0] != "" {
		parts = []string{"linux", parts[0]}
	}
	if len(parts) < 2 || len(parts) > 3 {
		return Platform{}, fmt.Errorf("invalid platform %q: want os/arch[/variant]", s)
	}
	if parts[0] == "" || parts[1] == "" {
		return Platform{}, fmt.Errorf("invalid platform %q: want os/arch[/variant]", s)
	}
	for _, part := range parts {
		if !validPart(part) {
			return Platform{}, fmt.Errorf("invalid platform %q: want os/arch[/variant] of letters, digits, _ and -", s)
		}
	}
	p := Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	p = p.normalize()
	if p.OS != "linux" {
		return Platform{}, fmt.Errorf("invalid platform %q: only linux images are built", s)
	}
	return p, nil
}

// ParseList parses comma-separated lists of platforms, in order, dropping
// repeats.
func ParseList(list []string) ([]Platform, error) {
	var out []Platform
	for _, item := range list {
		for _, s := range strings.Split(item, ",") {
			p, err := Parse(s)
			if err != nil {
				return nil, err
			}
			if !contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

func contains(ps []Platform, p Platform) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// FromOCI normalises the platform of an index entry or an image config.
func FromOCI(p v1.Platform) Platform {
	return Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}.normalize()
}

// OCI is p as an index entry or a config says it: arm64's default v8 left
// out, as containerd normalises it and BuildKit writes it.
func (p Platform) OCI() v1.Platform {
	return v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.TargetVariant()}
}

// Matches tells whether an image made for have (an index entry or a
// config) runs as p, as Docker's --platform matching does.
func (p Platform) Matches(have v1.Platform) bool { return FromOCI(have) == p.normalize() }

// String prints p as Docker does: os/arch[/variant], arm64's default v8
// left out.
func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if v := p.TargetVariant(); v != "" {
		s += "/" + v
	}
	return s
}

// TargetVariant is the variant as BuildKit's TARGETVARIANT and
// BUILDVARIANT say it: "" for arm64's default v8.
func (p Platform) TargetVariant() string {
	if p.Architecture == "arm64" && p.Variant == "v8" {
		return ""
	}
	return p.Variant
}

// Host is the platform of the machine manifold runs on.
func Host() Platform {
	return Platform{OS: "linux", Architecture: runtime.GOARCH}.normalize()
}

// normalize spells a platform the way Docker compares them: aliases to
// GOARCH names, arm64 with variant v8, arm with v7 unless said otherwise.
// validPart is what an OS, architecture or variant may be made of.
func validPart(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

func (p Platform) normalize() Platform {
	p.OS = strings.ToLower(p.OS)
	arch := strings.ToLower(p.Architecture)
	if a, ok := aliases[arch]; ok {
		arch = a.arch
		if p.Variant == "" {
			p.Variant = a.variant
		}
	}
	p.Architecture = arch
	switch arch {
	case "arm64":
		if p.Variant == "" || p.Variant == "8" {
			p.Variant = "v8"
		}
	case "arm":
		if p.Variant == "" {
			p.Variant = "v7"
		} else if !strings.HasPrefix(p.Variant, "v") {
			p.Variant = "v" + p.Variant
		}
	}
	return p
}

// aliases are the other names architectures go by (uname -m, Debian), with
// the variant each implies.
var aliases = map[string]struct{ arch, variant string }{
	"x86_64": {"amd64", ""}, "x86-64": {"amd64", ""},
	"aarch64": {"arm64", ""},
	"armhf":   {"arm", "v7"}, "armel": {"arm", "v6"},
	"armv6l": {"arm", "v6"}, "armv7l": {"arm", "v7"},
	"i386": {"386", ""}, "i686": {"386", ""},
	"ppc64el":     {"ppc64le", ""},
	"mips64el":    {"mips64le", ""},
	"loongarch64": {"loong64", ""},
}
