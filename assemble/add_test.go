package assemble_test

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/ulikunitz/xz"
)

// ADD extracts an xz-compressed archive as BuildKit does: entries that
// climb with ../ stay inside the destination, and --chown owns them all.
func TestAddTarXzWithChownStaysInside(t *testing.T) {
	ctxDir := writeContext(t, map[string]string{"Dockerfile": "FROM scratch\nADD --chown=5:6 archive.tar.xz /dst/\n"})
	var buf bytes.Buffer
	zw, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	for _, e := range []struct{ name, data string }{{"../escape.txt", "e\n"}, {"inside/f.txt", "f\n"}, {"/abs.txt", "a\n"}} {
		tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o640, Uid: 1, Gid: 2, Size: int64(len(e.data)), Typeflag: tar.TypeReg})
		tw.Write([]byte(e.data))
	}
	tw.Close()
	zw.Close()
	if err := os.WriteFile(filepath.Join(ctxDir, "archive.tar.xz"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	res := mustBuild(t, ctxDir, []string{"linux/amd64"}, nil)
	ls, _ := res.Images[0].Image.Layers()
	files := layerFiles(t, ls[0])
	for name, data := range map[string]string{"dst/escape.txt": "e\n", "dst/inside/f.txt": "f\n", "dst/abs.txt": "a\n"} {
		f, ok := files[name]
		if !ok || f.Data != data || f.UID != 5 || f.GID != 6 || f.Mode != 0o640 {
			t.Errorf("%s: %+v (present %v), want %q owned 5:6, mode 0640", name, f, ok, data)
		}
	}
	if d, ok := files["dst/"]; !ok || d.UID != 5 || d.GID != 6 || d.Mode != 0o755 || len(files) != 5 {
		t.Errorf("the layer holds %v, want /dst made 0755 and 5:6 (as BuildKit makes it), the three files and inside/", files)
	}
	if d, ok := files["dst/inside/"]; !ok || d.UID != 0 || d.GID != 0 || d.Mode != 0o755 {
		t.Errorf("dst/inside/, which the archive implies: %+v (present %v), want 0755 and root's as extraction makes it", d, ok)
	}
}

// Symlinks that a COPY names are followed inside the context (links inside
// a copied directory stay links), and files hardlinked in the context come
// out linked only when one source directory holds both, as in BuildKit.
func TestCopyFollowsNamedLinksAndKeepsHardlinksPerSource(t *testing.T) {
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile": "FROM scratch\nCOPY link.txt /a/\nCOPY linkdir /b/\nCOPY h1 h2 /c/\nCOPY dir/ /d/\n",
		"real.txt":   "real\n", "realdir/x.txt": "x\n", "h1": "h\n", "dir/h3": "d\n",
	})
	os.Symlink("real.txt", filepath.Join(ctxDir, "link.txt"))
	os.Symlink("/realdir", filepath.Join(ctxDir, "linkdir")) // absolute: inside the context
	os.Symlink("../real.txt", filepath.Join(ctxDir, "realdir", "inner"))
	os.Link(filepath.Join(ctxDir, "h1"), filepath.Join(ctxDir, "h2"))
	os.Link(filepath.Join(ctxDir, "dir", "h3"), filepath.Join(ctxDir, "dir", "h4"))
	res := mustBuild(t, ctxDir, []string{"linux/amd64"}, nil)
	ls, _ := res.Images[0].Image.Layers()
	for i, want := range []map[string]fileInfo{
		{"a/link.txt": {Type: tar.TypeReg, Data: "real\n"}},
		{"b/x.txt": {Type: tar.TypeReg, Data: "x\n"}, "b/inner": {Type: tar.TypeSymlink, Link: "../real.txt"}},
		{"c/h1": {Type: tar.TypeReg, Data: "h\n"}, "c/h2": {Type: tar.TypeReg, Data: "h\n"}},
		{"d/h3": {Type: tar.TypeReg, Data: "d\n"}, "d/h4": {Type: tar.TypeLink, Link: "d/h3"}},
	} {
		files := layerFiles(t, ls[i])
		for name, w := range want {
			f := files[name]
			if f.Type != w.Type || f.Data != w.Data || f.Link != w.Link {
				t.Errorf("layer %d: %s is %+v, want type %c data %q link %q", i+1, name, f, w.Type, w.Data, w.Link)
			}
		}
	}
}
