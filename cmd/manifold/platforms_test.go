package main

import (
	"archive/tar"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// Ten platforms in one call: each RUN runs under its emulator (amd64 and
// 386 natively) and writes what the platform says about itself, then
// manifold run runs each variant. riscv64 and loong64 have no shell: the
// steps are exec form.
func TestTenPlatformsBuiltAndRun(t *testing.T) {
	host, _ := registrytest.Distribution(t)
	base := assembletest.Busybox(t, host+"/library/base:10", false, assembletest.TenPlatforms...)
	dir := contextDir(t, fmt.Sprintf("FROM %s\nRUN [\"/bin/archinfo\", \"/archinfo\"]\nCMD [\"/bin/archinfo\"]\n", base))
	tag := host + "/demo/ten:1"
	plats := strings.Join(assembletest.TenPlatforms, ",")
	if code, _, stderr := manifold(t, "build", "--platform", plats, "-t", tag, "--push", dir); code != 0 {
		t.Fatalf("build: exit %d\n%s", code, stderr)
	}
	written := archinfoFiles(t, tag)
	if len(written) != 10 {
		t.Errorf("the index has %d platforms with /archinfo, want 10: %v", len(written), written)
	}
	for _, p := range assembletest.TenPlatforms {
		want := wantArchinfo(t, p)
		if !strings.HasPrefix(written[p], want) {
			t.Errorf("%s: the RUN step wrote %q, want %q...", p, written[p], want)
		}
		code, out, errOut := manifold(t, "run", "--platform", p, tag)
		if code != 0 || !strings.HasPrefix(out, want) {
			t.Errorf("run --platform %s: exit %d, printed %q (%s); want %q...", p, code, out, errOut, want)
		}
	}
}

// wantArchinfo is how archinfo's line starts on p: the Go architecture and
// arm variant it was built for, and what uname -m says there.
func wantArchinfo(t *testing.T, s string) string {
	p, err := platform.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	goarm := "-"
	if p.Architecture == "arm" {
		goarm = strings.TrimPrefix(p.Variant, "v")
	}
	return fmt.Sprintf("goarch=%s goarm=%s machine=%s ", p.Architecture, goarm, p.Machine())
}

// archinfoFiles reads /archinfo from the top layer of each platform of the
// index at tag.
func archinfoFiles(t *testing.T, tag string) map[string]string {
	t.Helper()
	r, _ := name.ParseReference(tag)
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(idx); err != nil {
		t.Errorf("the pushed index does not validate: %v", err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range m.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		ls, _ := img.Layers()
		rc, err := ls[len(ls)-1].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for h, err := tr.Next(); err == nil; h, err = tr.Next() {
			if h.Name == "archinfo" {
				data, _ := io.ReadAll(tr)
				out[platform.FromOCI(*d.Platform).String()] = string(data)
			}
		}
		rc.Close()
	}
	return out
}
