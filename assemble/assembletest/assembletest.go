// Package assembletest makes the multi-arch base that manifold's tests
// build on, from Debian's busybox-static packages and a cross-compiled Go
// program, with manifold's own build (testdata/fixtures/busybox/Dockerfile).
package assembletest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/assemble/testkit"
	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/layers"
	"github.com/manifold-build/manifold/registry"
)

// AllPlatforms are the six platforms of the fixture with busybox and a
// shell, in its index order: what most tests build on.
var AllPlatforms = []string{"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/ppc64le", "linux/s390x", "linux/386"}

// TenPlatforms are every platform of the fixture: AllPlatforms, arm/v6 and
// mips64le (busybox from Debian's armel and mips64el), riscv64 and loong64
// (only archinfo, no shell).
var TenPlatforms = append(append([]string(nil), AllPlatforms...), "linux/arm/v6", "linux/mips64le", "linux/riscv64", "linux/loong64")

// Epoch is the SOURCE_DATE_EPOCH of fixture builds, so their digests hold.
var Epoch = time.Unix(1700000000, 0).UTC()

// Busybox builds the busybox fixture for platforms (default: all six) and
// pushes it to ref, with Docker media types when docker is set, else OCI's.
func Busybox(t testing.TB, ref string, docker bool, platforms ...string) name.Reference {
	t.Helper()
	res := buildFixture(t, docker, platforms...)
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Push(context.Background(), res.Index, []name.Reference{r}, registry.Options{}); err != nil {
		t.Fatalf("pushing fixture: %v", err)
	}
	return r
}

// buildFixture builds the busybox fixture without storing it anywhere.
func buildFixture(t testing.TB, docker bool, platforms ...string) *assemble.Result {
	t.Helper()
	dir := testkit.FixtureDir(t)
	if len(platforms) == 0 {
		platforms = AllPlatforms
	}
	plats, err := platform.ParseList(platforms)
	if err != nil {
		t.Fatal(err)
	}
	epoch := Epoch
	res, err := assemble.Build(context.Background(), assemble.Options{
		Context:          dir,
		Dockerfile:       filepath.Join(testkit.RepoRoot(), "testdata", "fixtures", "busybox", "Dockerfile"),
		Platforms:        plats,
		Epoch:            &epoch,
		DockerMediaTypes: docker,
		Rootfs:           &layers.Cache{Dir: t.TempDir()},
	})
	if err != nil {
		t.Fatalf("building busybox fixture: %v", err)
	}
	t.Cleanup(func() { res.Close() })
	Validate(t, res)
	return res
}

// Platforms parses platform strings or fails the test.
func Platforms(t testing.TB, list ...string) []platform.Platform {
	t.Helper()
	ps, err := platform.ParseList(list)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// Machine is what uname -m prints on a platform ("linux/arm64") under
// manifold: natively or under qemu.
func Machine(p string) string {
	pl, err := platform.Parse(p)
	if err != nil {
		return "invalid platform " + p
	}
	return pl.Machine()
}

// Validate checks a build's result with go-containerregistry's own
// validation: the index, and every image's manifest, config and layers
// (their bytes against their digests and diff IDs). It reads the base's
// layers too: tests that count what a registry served count first.
func Validate(t testing.TB, res *assemble.Result) {
	t.Helper()
	if err := validate.Index(res.Index); err != nil {
		t.Errorf("the build's index does not validate: %v", err)
	}
}
