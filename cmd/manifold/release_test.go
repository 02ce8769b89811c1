package main

import (
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/assemble/testkit"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// linkTree makes dst a copy of src made of hardlinks (copies across
// filesystems).
func linkTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		fi, err := os.Lstat(p)
		switch {
		case err != nil:
			return err
		case fi.IsDir():
			return os.MkdirAll(target, fi.Mode().Perm()|0o700)
		case fi.Mode()&fs.ModeSymlink != 0:
			link, _ := os.Readlink(p)
			return os.Symlink(link, target)
		case fi.Mode().IsRegular():
			if os.Link(p, target) == nil {
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, fi.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The release Dockerfile (cmd/manifold/Dockerfile, what the release
// workflow builds) builds manifold's own image for two platforms, cross-
// compiling on the build platform, offline: a Go image made of this
// machine's Go, modules from a loopback proxy over this machine's module
// cache. The image runs on both platforms (arm64 under qemu).
func TestReleaseDockerfile(t *testing.T) {
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	testkit.Require(t, err == nil, "go")
	modcache, _ := exec.Command("go", "env", "GOMODCACHE").Output()
	host, _ := registrytest.Distribution(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64")

	// The Go image: busybox and this machine's GOROOT, as golang:1.26 has it.
	goctx := t.TempDir()
	linkTree(t, strings.TrimSpace(string(goroot)), filepath.Join(goctx, "go"))
	os.WriteFile(filepath.Join(goctx, "Dockerfile"), []byte(fmt.Sprintf(`FROM %s
COPY go /usr/local/go
ENV PATH=/usr/local/go/bin:/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin GOPATH=/go GOTOOLCHAIN=local
`, base)), 0o644)
	goImage := host + "/library/golang:host"
	if code, _, errOut := manifold(t, "build", "--progress", "quiet", "--platform", "linux/amd64", "-t", goImage, "--push", goctx); code != 0 {
		t.Fatalf("the Go image: %d %s", code, errOut)
	}

	proxy := httptest.NewServer(http.FileServer(http.Dir(filepath.Join(strings.TrimSpace(string(modcache)), "cache", "download"))))
	defer proxy.Close()
	tag := host + "/manifold/manifold:test"
	code, _, errOut := manifold(t, "build", "--progress", "plain", "-f", filepath.Join(testkit.RepoRoot(), "cmd", "manifold", "Dockerfile"),
		"--platform", twoPlatforms, "--build-arg", "GO_IMAGE="+goImage, "--build-arg", "GOPROXY="+proxy.URL,
		"--build-arg", "GOSUMDB=off", "--build-arg", "VERSION=v0.0.0-test", "-t", tag, "--push", testkit.RepoRoot())
	if code != 0 {
		t.Fatalf("building the release Dockerfile: %d\n%s", code, errOut)
	}
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		code, out, errOut := manifold(t, "run", "--platform", p, tag, "version")
		if code != 0 || !strings.HasPrefix(out, "manifold v0.0.0-test\n") {
			t.Errorf("manifold run --platform %s %s version: %d %q %s", p, tag, code, out, errOut)
		}
	}
}
