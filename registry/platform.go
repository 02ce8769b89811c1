package registry

import (
	"fmt"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ParsePlatform parses "os/arch[/variant]" (or just "arch", meaning linux)
// and fills in the defaults Docker uses.
func ParsePlatform(s string) (v1.Platform, error) {
	parts := strings.Split(strings.TrimSpace(s), "/")
	if len(parts) == 1 && parts[0] != "" {
		parts = []string{"linux", parts[0]}
	}
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return v1.Platform{}, fmt.Errorf("invalid platform %q: want os/arch[/variant]", s)
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	if p.OS != "linux" {
		return v1.Platform{}, fmt.Errorf("invalid platform %q: only linux images are built", s)
	}
	return Normalize(p), nil
}

// ParsePlatforms parses a comma-separated list, dropping repeats.
func ParsePlatforms(list []string) ([]v1.Platform, error) {
	var out []v1.Platform
	for _, item := range list {
		for _, s := range strings.Split(item, ",") {
			p, err := ParsePlatform(s)
			if err != nil {
				return nil, err
			}
			if !containsPlatform(out, p) {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

func containsPlatform(ps []v1.Platform, p v1.Platform) bool {
	for _, q := range ps {
		if Matches(p, q) {
			return true
		}
	}
	return false
}

// Normalize spells a platform the way Docker compares them: aliases to GOARCH
// names, arm64 with variant v8, arm with v7 unless said otherwise.
func Normalize(p v1.Platform) v1.Platform {
	p.OS = strings.ToLower(p.OS)
	switch strings.ToLower(p.Architecture) {
	case "x86_64", "x86-64", "amd64":
		p.Architecture = "amd64"
	case "aarch64", "arm64":
		p.Architecture = "arm64"
		if p.Variant == "" || p.Variant == "8" {
			p.Variant = "v8"
		}
	case "armhf", "arm", "armel":
		if p.Architecture == "armel" && p.Variant == "" {
			p.Variant = "v6"
		}
		p.Architecture = "arm"
		if p.Variant == "" {
			p.Variant = "v7"
		} else if !strings.HasPrefix(p.Variant, "v") {
			p.Variant = "v" + p.Variant
		}
	case "i386", "i686", "386":
		p.Architecture = "386"
	case "ppc64el":
		p.Architecture = "ppc64le"
	}
	return p
}

// Matches tells whether an image made for have runs as want, as Docker's
// --platform matching does: linux/arm64 is linux/arm64/v8, linux/arm is v7.
func Matches(want, have v1.Platform) bool {
	w, h := Normalize(want), Normalize(have)
	return w.OS == h.OS && w.Architecture == h.Architecture && w.Variant == h.Variant
}

// Host is the platform of the machine manifold runs on.
func Host() v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	return Normalize(p)
}

// Format prints a platform as Docker does: os/arch[/variant], with arm64's
// default v8 left out.
func Format(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" && !(p.Architecture == "arm64" && p.Variant == "v8") {
		s += "/" + p.Variant
	}
	return s
}
