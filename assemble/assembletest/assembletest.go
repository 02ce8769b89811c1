// Package assembletest makes the multi-arch busybox base that manifold's
// tests build on, from Debian's busybox-static packages, with manifold's own
// build (testdata/fixtures/busybox/Dockerfile).
package assembletest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/layers"
	"github.com/manifold-build/manifold/registry"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// AllPlatforms are the platforms of the busybox fixture, in its index order.
var AllPlatforms = []string{"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/ppc64le", "linux/s390x", "linux/386"}

// Unames are what uname -m prints on each of AllPlatforms.
var Unames = map[string]string{
	"linux/amd64": "x86_64", "linux/arm64": "aarch64", "linux/arm/v7": "armv7l",
	"linux/ppc64le": "ppc64le", "linux/s390x": "s390x", "linux/386": "i686",
}

// Epoch is the SOURCE_DATE_EPOCH of fixture builds, so their digests hold.
var Epoch = time.Unix(1700000000, 0).UTC()

// RepoRoot is the top of the manifold source tree.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

var fixtureOnce sync.Once

// FixtureDir returns the folder of per-architecture root filesystems that
// testdata/fixtures/busybox-rootfs.sh makes ($MANIFOLD_FIXTURES, default
// /var/cache/manifold-fixtures), running the script when they are missing.
func FixtureDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("MANIFOLD_FIXTURES")
	if dir == "" {
		dir = "/var/cache/manifold-fixtures"
	}
	ready := func() bool {
		_, err := os.Stat(filepath.Join(dir, "s390x", "etc", "etc", "passwd"))
		return err == nil
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
	registrytest.Require(t, ready(), "busybox fixture root filesystems in %s (run testdata/fixtures/busybox-rootfs.sh %s as root)", dir, dir)
	return dir
}

// Busybox builds the busybox fixture for platforms (default: all six) and
// pushes it to ref, with Docker media types when docker is set, else OCI's.
func Busybox(t testing.TB, ref string, docker bool, platforms ...string) name.Reference {
	t.Helper()
	res := BuildFixture(t, docker, platforms...)
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Push(context.Background(), res.Index, []name.Reference{r}, registry.Options{}); err != nil {
		t.Fatalf("pushing fixture: %v", err)
	}
	return r
}

// BuildFixture builds the busybox fixture without storing it anywhere.
func BuildFixture(t testing.TB, docker bool, platforms ...string) *assemble.Result {
	t.Helper()
	dir := FixtureDir(t)
	if len(platforms) == 0 {
		platforms = AllPlatforms
	}
	plats, err := registry.ParsePlatforms(platforms)
	if err != nil {
		t.Fatal(err)
	}
	epoch := Epoch
	res, err := assemble.Build(context.Background(), assemble.Options{
		Context:          dir,
		Dockerfile:       filepath.Join(RepoRoot(), "testdata", "fixtures", "busybox", "Dockerfile"),
		Platforms:        plats,
		Epoch:            &epoch,
		DockerMediaTypes: docker,
		Rootfs:           &layers.Cache{Dir: t.TempDir()},
	})
	if err != nil {
		t.Fatalf("building busybox fixture: %v", err)
	}
	t.Cleanup(func() { res.Close() })
	return res
}

// Platforms parses platform strings or fails the test.
func Platforms(t testing.TB, list ...string) []v1.Platform {
	t.Helper()
	ps, err := registry.ParsePlatforms(list)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}
