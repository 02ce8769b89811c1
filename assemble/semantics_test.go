package assemble_test

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// A COPY's layer lists every parent directory of what it writes, as
// BuildKit's does: those the image has as they are there (/tmp 1777,
// /etc 0755), those it makes 0755 and root's, or the --chown owner.
func TestCopyLayerListsItsParentDirectories(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64")
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile": fmt.Sprintf("FROM %s\nCOPY a.txt /tmp/x/\nCOPY a.txt /etc/\nCOPY --chown=1001:1002 a.txt /deep/x/\n", base),
		"a.txt":      "a\n",
	})
	res := mustBuild(t, ctxDir, []string{"linux/amd64"}, nil)
	ls, _ := res.Images[0].Image.Layers()
	for i, want := range []map[string]fileInfo{
		{"tmp/": {Type: tar.TypeDir, Mode: 0o1777}, "tmp/x/": {Type: tar.TypeDir, Mode: 0o755}, "tmp/x/a.txt": {Type: tar.TypeReg, Mode: 0o644, Data: "a\n"}},
		{"etc/": {Type: tar.TypeDir, Mode: 0o755}, "etc/a.txt": {Type: tar.TypeReg, Mode: 0o644, Data: "a\n"}},
		{"deep/": {Type: tar.TypeDir, Mode: 0o755, UID: 1001, GID: 1002}, "deep/x/": {Type: tar.TypeDir, Mode: 0o755, UID: 1001, GID: 1002}, "deep/x/a.txt": {Type: tar.TypeReg, Mode: 0o644, UID: 1001, GID: 1002, Data: "a\n"}},
	} {
		assertLayer(t, ls[2+i], want)
	}
}

// A COPY into a destination that goes through symlinks of the image
// writes where the links lead, as BuildKit resolves it: an absolute link,
// a relative one, a dangling one; WORKDIR too, which keeps the path as
// written in the config.
func TestCopyFollowsTheImagesSymlinks(t *testing.T) {
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile":         "FROM scratch AS base\nCOPY tree/ /\nFROM base\nCOPY a.txt /abs-link/\nCOPY a.txt /rel-link/sub/b.txt\nCOPY a.txt /dangling\nWORKDIR /abs-link/w\n",
		"a.txt":              "a\n",
		"tree/real/sub/keep": "",
	})
	tree := filepath.Join(ctxDir, "tree")
	os.Chmod(filepath.Join(tree, "real"), 0o700)
	os.Symlink("/real", filepath.Join(tree, "abs-link"))
	os.Symlink("real", filepath.Join(tree, "rel-link"))
	os.Symlink("/nowhere/x", filepath.Join(tree, "dangling"))
	res := mustBuild(t, ctxDir, []string{"linux/amd64"}, nil)
	img := res.Images[0].Image
	ls, _ := img.Layers()
	if len(ls) != 5 {
		t.Fatalf("%d layers, want 5: the tree, three COPYs, WORKDIR", len(ls))
	}
	real := fileInfo{Type: tar.TypeDir, Mode: 0o700}
	dir := fileInfo{Type: tar.TypeDir, Mode: 0o755}
	file := fileInfo{Type: tar.TypeReg, Mode: 0o644, Data: "a\n"}
	assertLayer(t, ls[1], map[string]fileInfo{"real/": real, "real/a.txt": file})
	assertLayer(t, ls[2], map[string]fileInfo{"real/": real, "real/sub/": dir, "real/sub/b.txt": file})
	assertLayer(t, ls[3], map[string]fileInfo{"nowhere/": dir, "nowhere/x": file})
	assertLayer(t, ls[4], map[string]fileInfo{"real/": real, "real/w/": dir})
	if cf, _ := img.ConfigFile(); cf.Config.WorkingDir != "/abs-link/w" {
		t.Errorf("WorkingDir %q, want the path as written, /abs-link/w", cf.Config.WorkingDir)
	}
}

// WORKDIR makes its directory and the missing parents, owned by the USER
// in effect as BuildKit's file operations find it; when the directory is
// there its layer is empty, as BuildKit's is.
func TestWorkdirMakesItsDirectory(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64")
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile": fmt.Sprintf("FROM %s\nWORKDIR /tmp\nUSER app\nWORKDIR /home/app/work\nUSER 1234:5678\nWORKDIR /srv/x\nUSER nosuch\nWORKDIR y\nWORKDIR /\n", base),
	})
	res := mustBuild(t, ctxDir, []string{"linux/amd64"}, nil)
	img := res.Images[0].Image
	ls, _ := img.Layers()
	if len(ls) != 6 {
		t.Fatalf("%d layers, want the base's 2 and one for each WORKDIR but /", len(ls))
	}
	assertLayer(t, ls[2], map[string]fileInfo{})
	app := fileInfo{Type: tar.TypeDir, Mode: 0o755, UID: 1000, GID: 1000}
	assertLayer(t, ls[3], map[string]fileInfo{"home/": app, "home/app/": app, "home/app/work/": app})
	ids := fileInfo{Type: tar.TypeDir, Mode: 0o755, UID: 1234, GID: 5678}
	assertLayer(t, ls[4], map[string]fileInfo{"srv/": ids, "srv/x/": ids})
	assertLayer(t, ls[5], map[string]fileInfo{"srv/": ids, "srv/x/": ids, "srv/x/y/": {Type: tar.TypeDir, Mode: 0o755}})
	cf, _ := img.ConfigFile()
	if cf.Config.WorkingDir != "/" {
		t.Errorf("WorkingDir %q, want /", cf.Config.WorkingDir)
	}
	var empty []bool
	for _, h := range cf.History[len(cf.History)-8:] {
		empty = append(empty, h.EmptyLayer)
	}
	if want := []bool{false, true, false, true, false, true, false, true}; fmt.Sprint(empty) != fmt.Sprint(want) {
		t.Errorf("history's empty_layer %v, want %v", empty, want)
	}
}

// assertLayer checks that a layer holds exactly the entries want.
func assertLayer(t *testing.T, l v1.Layer, want map[string]fileInfo) {
	t.Helper()
	got := layerFiles(t, l)
	for n, w := range want {
		if g, ok := got[n]; !ok || g != w {
			t.Errorf("%s: %+v (present %v), want %+v", n, g, ok, w)
		}
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			t.Errorf("the layer also holds %s", n)
		}
	}
}

// HEALTHCHECK --start-interval reaches the config (Docker's
// Healthcheck.StartInterval), is inherited from a stage and from a base
// image, and a later HEALTHCHECK without it drops it.
func TestHealthcheckStartInterval(t *testing.T) {
	host, _ := registrytest.Memory(t)
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile": "FROM scratch AS hc\nHEALTHCHECK --interval=30s --start-interval=2s CMD [\"true\"]\nFROM hc\nLABEL child=1\n",
	})
	res := mustBuild(t, ctxDir, []string{"linux/amd64"}, nil)
	if got := startInterval(t, res.Images[0].Image); got != "2s" {
		t.Errorf("StartInterval %s, want 2s", got)
	}
	push(t, res, host+"/hc/base:1")
	for df, want := range map[string]string{
		"FROM " + host + "/hc/base:1\nLABEL again=1\n":               "2s",
		"FROM " + host + "/hc/base:1\nHEALTHCHECK CMD [\"false\"]\n": "0s",
	} {
		ctxDir := writeContext(t, map[string]string{"Dockerfile": df})
		res := mustBuild(t, ctxDir, []string{"linux/amd64"}, nil)
		if got := startInterval(t, res.Images[0].Image); got != want {
			t.Errorf("%q: StartInterval %s, want %s", df, got, want)
		}
	}
}

func startInterval(t *testing.T, img v1.Image) string {
	t.Helper()
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Config struct {
			Healthcheck struct{ StartInterval time.Duration }
		} `json:"config"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Config.Healthcheck.StartInterval.String()
}
