package assemble_test

import (
	"archive/tar"
	"context"
	"io"
	"iter"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/layers"
	"github.com/manifold-build/manifold/registry"
)

// writeContext makes a build context from file names and contents.
func writeContext(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for n, data := range files {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// build builds a context for platforms with a fixed epoch.
func build(t *testing.T, ctxDir string, platforms []string, mod func(*assemble.Options)) (*assemble.Result, error) {
	t.Helper()
	epoch := assembletest.Epoch
	o := assemble.Options{
		Context:   ctxDir,
		Platforms: assembletest.Platforms(t, platforms...),
		Epoch:     &epoch,
		Rootfs:    &layers.Cache{Dir: t.TempDir()},
	}
	if mod != nil {
		mod(&o)
	}
	return assemble.Build(context.Background(), o)
}

// mustBuild builds, and checks the result with ggcr's validate.
func mustBuild(t *testing.T, ctxDir string, platforms []string, mod func(*assemble.Options)) *assemble.Result {
	t.Helper()
	res := mustBuildUnread(t, ctxDir, platforms, mod)
	assembletest.Validate(t, res)
	return res
}

// mustBuildUnread builds without reading the result, for tests that count
// what a registry served: they validate once they have counted.
func mustBuildUnread(t *testing.T, ctxDir string, platforms []string, mod func(*assemble.Options)) *assemble.Result {
	t.Helper()
	res, err := build(t, ctxDir, platforms, mod)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	t.Cleanup(func() { res.Close() })
	return res
}

func push(t *testing.T, res *assemble.Result, refs ...string) {
	t.Helper()
	var tags []name.Reference
	for _, r := range refs {
		tags = append(tags, ref(t, r))
	}
	if _, err := registry.Push(context.Background(), res.Index, tags, registry.Options{}); err != nil {
		t.Fatalf("push: %v", err)
	}
}

// fileInfo is what a test checks of a layer entry.
type fileInfo struct {
	Type     byte
	Mode     int64
	UID, GID int
	Link     string
	Data     string
}

// layerFiles reads a layer's entries by name.
func layerFiles(t *testing.T, l v1.Layer) map[string]fileInfo {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]fileInfo{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		out[h.Name] = fileInfo{Type: h.Typeflag, Mode: h.Mode, UID: h.Uid, GID: h.Gid, Link: h.Linkname, Data: string(data)}
	}
}

func digests(t *testing.T, img v1.Image) []string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d.String())
	}
	return out
}

func mustDigest(t *testing.T, idx v1.ImageIndex, plat string) v1.Hash {
	t.Helper()
	p, err := platform.Parse(plat)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range m.Manifests {
		if d.Platform != nil && p.Matches(*d.Platform) {
			return d.Digest
		}
	}
	t.Fatalf("index has no %s", plat)
	return v1.Hash{}
}

func ref(t testing.TB, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mapsKeys(m map[string]string) iter.Seq[string] { return maps.Keys(m) }
