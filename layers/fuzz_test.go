package layers

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/manifold-build/manifold/assemble/testkit"
)

// Any tar stream at all, unpacked (as a rootfs and as an overlay-format
// snapshot): no panic, and nothing outside the root changes. The seeds
// are the crafted-layer corpus.
func FuzzUnpack(f *testing.F) {
	for _, c := range corpus() {
		if strings.Contains(c.name, "huge") || strings.Contains(c.name, "bomb") {
			continue
		}
		for _, l := range c.layers(&testing.T{}, "/outside") {
			f.Add(l.(rawLayer).tarball)
		}
	}
	defer func(n int64) { maxFileSize = n }(maxFileSize)
	maxFileSize = 64 << 20 // fuzzed sparse maps declare exabytes
	Warn = func(string) {}
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		root, outside, diff := filepath.Join(parent, "root"), filepath.Join(parent, "outside"), filepath.Join(parent, "diff")
		for _, d := range []string{root, outside, diff} {
			os.Mkdir(d, 0o755)
		}
		os.WriteFile(filepath.Join(outside, "sentinel"), []byte("keep"), 0o644)
		before := treeState(t, outside)
		Unpack(context.Background(), root, []v1.Layer{rawLayer{data}})
		UnpackDiff(context.Background(), diff, rawLayer{data}, nil)
		if after := treeState(t, outside); after != before {
			t.Fatalf("the unpack changed what is outside its root:\nbefore:\n%safter:\n%s", before, after)
		}
		if names, _ := os.ReadDir(parent); len(names) != 3 {
			t.Fatalf("the unpack made %v next to its root", names)
		}
	})
}

var fuzzNames = []string{"a", "b", "c", "a/x", "a/y", "b/x", "a/x/z"}

// fuzzTree makes files, directories, symlinks, deletions (0/0 character
// devices) and opaque directories under dir from ops, three bytes each.
func fuzzTree(dir string, ops []byte, upper bool) {
	for i := 0; i+2 < len(ops); i += 3 {
		name := fuzzNames[int(ops[i+1])%len(fuzzNames)]
		p := filepath.Join(dir, name)
		if os.MkdirAll(filepath.Dir(p), 0o755) != nil {
			continue
		}
		arg := ops[i+2]
		switch ops[i] % 6 {
		case 0:
			os.RemoveAll(p)
			os.WriteFile(p, bytes.Repeat([]byte{arg}, int(arg%5)), 0o644)
		case 1:
			os.Mkdir(p, 0o755)
		case 2:
			os.RemoveAll(p)
			os.Symlink([]string{"a", "../b", "/c", "x/../.."}[arg%4], p)
		case 3:
			if upper {
				os.RemoveAll(p)
				unix.Mknod(p, unix.S_IFCHR, 0)
			}
		case 4:
			if upper {
				os.Mkdir(p, 0o755)
				unix.Setxattr(p, "trusted.overlay.opaque", []byte("y"), 0)
			}
		case 5:
			os.RemoveAll(p)
		}
	}
}

// Any lower and upper tree: the changes captured from the upper one
// make a layer that unpacks, onto the lower one, without error, every
// file the step wrote is there with its contents and every deletion is
// gone; and they come in the layer's order, so that writing them as they
// are found makes the same layer.
func FuzzChanges(f *testing.F) {
	testkit.RequireRoot(f, "deletions in an upper directory are character devices: root makes them")
	f.Add([]byte{3, 0, 0, 1, 1, 0, 0, 3, 7, 0, 1, 9, 3, 2, 0, 4, 0, 0})
	f.Add([]byte{2, 1, 0, 0, 0, 5, 0, 6, 1, 2, 0, 0, 0, 3, 4, 0, 0})
	f.Add([]byte{4, 0, 3, 1, 2, 0, 0, 2, 2, 0, 4, 3, 0})
	// Found by fuzzing: a directory under an opaque one, the same as the
	// one it hides, was left out of the layer as merely copied up.
	f.Add([]byte("B000000000X10000000000000A0000"))
	// A deletion whose ".wh." name sorts before a file's that the upper
	// directory lists first: lower c; upper b, c deleted.
	f.Add([]byte{3, 0, 2, 1, 0, 1, 1, 3, 2, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) == 0 {
			return
		}
		split := int(ops[0]) % len(ops)
		base := t.TempDir()
		lower, upper, applied := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "applied")
		for _, d := range []string{lower, upper, applied} {
			os.Mkdir(d, 0o755)
		}
		fuzzTree(lower, ops[1:split+1], false)
		fuzzTree(applied, ops[1:split+1], false)
		fuzzTree(upper, ops[split+1:], true)
		entries, err := Changes(upper, []string{lower}, ChangeOptions{})
		if err != nil {
			t.Fatalf("changes: %v", err)
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		if err := Write(tw, entries, nil); err != nil {
			t.Fatalf("writing the layer: %v", err)
		}
		tw.Close()
		var streamed bytes.Buffer
		tw = tar.NewWriter(&streamed)
		w := NewSortedWriter(tw, nil)
		if err := ChangesTo(upper, []string{lower}, ChangeOptions{}, w.Add); err != nil {
			t.Fatalf("writing the changes as they are found: %v", err)
		}
		w.Close()
		tw.Close()
		if !bytes.Equal(streamed.Bytes(), buf.Bytes()) {
			t.Errorf("the changes written as they are found differ from the sorted layer:\n%v\n%v", tarNames(streamed.Bytes()), tarNames(buf.Bytes()))
		}
		if err := Unpack(context.Background(), applied, []v1.Layer{rawLayer{buf.Bytes()}}); err != nil {
			t.Fatalf("unpacking the changes onto the lower tree: %v", err)
		}
		filepath.WalkDir(upper, func(p string, d os.DirEntry, err error) error {
			rel, _ := filepath.Rel(upper, p)
			if err != nil || rel == "." || hasLinkParent(upper, rel) {
				return nil
			}
			fi, _ := d.Info()
			got, gerr := os.Lstat(filepath.Join(applied, rel))
			switch {
			case isWhiteout(fi):
				if gerr == nil {
					t.Errorf("%s was deleted, but is there after the layer", rel)
				}
			case fi.Mode().IsRegular():
				want, _ := os.ReadFile(p)
				if have, err := os.ReadFile(filepath.Join(applied, rel)); err != nil || !bytes.Equal(have, want) {
					t.Errorf("%s holds %q (%v), want %q", rel, have, err, want)
				}
			case gerr != nil || got.Mode().Type() != fi.Mode().Type():
				t.Errorf("%s is %v (%v) after the layer, want %v", rel, got, gerr, fi.Mode().Type())
			}
			return nil
		})
	})
}

// tarNames lists the entry names of a tar stream.
func tarNames(b []byte) []string {
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		names = append(names, h.Name)
	}
	return names
}

// hasLinkParent tells whether a directory on the way to rel is a symlink
// in the tree at dir.
func hasLinkParent(dir, rel string) bool {
	for d := path.Dir(rel); d != "." && d != "/"; d = path.Dir(d) {
		if fi, err := os.Lstat(filepath.Join(dir, d)); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			return true
		}
	}
	return false
}
