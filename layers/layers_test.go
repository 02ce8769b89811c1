package layers

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/manifold-build/manifold/assemble/testkit"
)

// mkLayer makes a layer from headers, in the order given (no sorting), so
// that tests can write the odd entries real layers carry.
func mkLayer(t *testing.T, entries ...Entry) v1.Layer {
	t.Helper()
	l, err := New(func(tw *tar.Writer) error {
		for _, e := range entries {
			h := e.Header
			h.Size = int64(len(e.Data))
			if err := tw.WriteHeader(&h); err != nil {
				return err
			}
			if _, err := tw.Write(e.Data); err != nil {
				return err
			}
		}
		return nil
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func file(name, data string) Entry {
	return Entry{Header: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}, Data: []byte(data)}
}

func dir(name string, mode int64) Entry {
	return Entry{Header: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode}}
}

func TestWriteIsDeterministic(t *testing.T) {
	epoch := time.Unix(1000, 0)
	later := time.Unix(5000, 123)
	a := []Entry{file("b/y", "y"), dir("b", 0o755), file("a", "a"), file("b/x", "x")}
	b := []Entry{file("a", "a"), file("b/x", "x"), dir("b", 0o755), file("b/y", "y")}
	for i := range a {
		a[i].ModTime, b[i].ModTime = later, later
		a[i].Uname = "someone"
	}
	digest := func(es []Entry) (v1.Hash, []string) {
		l, err := New(func(tw *tar.Writer) error { return Write(tw, es, &epoch) }, Options{})
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := l.Uncompressed()
		defer rc.Close()
		tr := tar.NewReader(rc)
		var names []string
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if !h.ModTime.Equal(epoch) || h.Uname != "" {
				t.Errorf("%s: mtime %v uname %q, want clamped to %v and no name", h.Name, h.ModTime, h.Uname, epoch)
			}
			names = append(names, h.Name)
		}
		d, _ := l.Digest()
		return d, names
	}
	da, names := digest(a)
	db, _ := digest(b)
	if da != db {
		t.Errorf("same files in another order gave digests %s and %s", da, db)
	}
	if got := strings.Join(names, " "); got != "a b/ b/x b/y" {
		t.Errorf("entry order %q, want parents before children, sorted", got)
	}
}

func TestZstdLayerRoundTrips(t *testing.T) {
	l, err := New(func(tw *tar.Writer) error { return Write(tw, []Entry{file("z", "zz")}, nil) }, Options{Compression: Zstd})
	if err != nil {
		t.Fatal(err)
	}
	if mt, _ := l.MediaType(); mt != "application/vnd.oci.image.layer.v1.tar+zstd" {
		t.Errorf("media type %s", mt)
	}
	got, err := ReadFiles(context.Background(), []v1.Layer{l}, "z")
	if err != nil || string(got["z"]) != "zz" {
		t.Errorf("read back %q, %v", got["z"], err)
	}
}

func TestUnpackAppliesWhiteoutsOpaqueDirsAndLinks(t *testing.T) {
	root := t.TempDir()
	l1 := mkLayer(t, dir("a", 0o755), file("a/x", "x"), file("a/y", "y"), dir("b", 0o750), file("b/old", "old"),
		Entry{Header: tar.Header{Name: "a/hard", Typeflag: tar.TypeLink, Linkname: "a/x"}},
		Entry{Header: tar.Header{Name: "s", Typeflag: tar.TypeSymlink, Linkname: "/a/y"}},
		Entry{Header: tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o4755}, Data: []byte("suid")},
		Entry{Header: tar.Header{Name: "f-link", Typeflag: tar.TypeLink, Linkname: "f"}},
		dir("gone", 0o755), file("gone/deep", "d"))
	l2 := mkLayer(t, file("a/.wh.x", ""), file("b/.wh..wh..opq", ""), file("b/new", "new"), file(".wh.gone", ""),
		file("s", "now a file"))
	if err := Unpack(context.Background(), root, []v1.Layer{l1, l2}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a/y": "y", "a/hard": "x", "b/new": "new", "s": "now a file", "f": "suid"}
	for n, data := range want {
		got, err := os.ReadFile(filepath.Join(root, n))
		if err != nil || string(got) != data {
			t.Errorf("%s = %q, %v; want %q", n, got, err, data)
		}
	}
	for _, n := range []string{"a/x", "b/old", "gone"} {
		if _, err := os.Lstat(filepath.Join(root, n)); !os.IsNotExist(err) {
			t.Errorf("%s still exists (err %v)", n, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(root, "f")); fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("f lost its setuid bit: %v", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Join(root, "b")); fi.Mode().Perm() != 0o750 {
		t.Errorf("b mode %v, want 0750", fi.Mode().Perm())
	}
}

func TestUnpackStaysInsideRoot(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	os.Mkdir(root, 0o755)
	if err := Unpack(context.Background(), root, []v1.Layer{mkLayer(t, file("../escaped", "x"))}); err == nil {
		t.Errorf("an entry named ../escaped was unpacked, want an error")
	}
	// Links that point out of the root are re-rooted, as containerd does.
	l1 := mkLayer(t, Entry{Header: tar.Header{Name: "up", Typeflag: tar.TypeSymlink, Linkname: "../../.."}},
		Entry{Header: tar.Header{Name: "abs", Typeflag: tar.TypeSymlink, Linkname: parent}},
		Entry{Header: tar.Header{Name: "lib", Typeflag: tar.TypeSymlink, Linkname: "/usr/lib"}}, dir("usr", 0o755), dir("usr/lib", 0o755))
	l2 := mkLayer(t, file("up/escaped", "x"), file("abs/escaped", "y"), file("lib/libc.so", "c"))
	if err := Unpack(context.Background(), root, []v1.Layer{l1, l2}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(parent, "escaped")); err == nil {
		t.Fatal("a file was written outside the root")
	}
	for name, want := range map[string]string{"escaped": "x", filepath.Join(parent[1:], "escaped"): "y", "usr/lib/libc.so": "c"} {
		if got, err := os.ReadFile(filepath.Join(root, name)); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q inside the root", name, got, err, want)
		}
	}
}

// countingLayer counts how often a layer's bytes are asked for.
type countingLayer struct {
	v1.Layer
	reads *int
}

func (c countingLayer) Uncompressed() (io.ReadCloser, error) {
	*c.reads++
	return c.Layer.Uncompressed()
}

func TestReadFilesStopsAtTheLayerThatSettles(t *testing.T) {
	var bottom, middle, top int
	ls := []v1.Layer{
		countingLayer{mkLayer(t, file("etc/passwd", "old"), file("etc/group", "g")), &bottom},
		countingLayer{mkLayer(t, file("etc/passwd", "new")), &middle},
		countingLayer{mkLayer(t, file("etc/.wh.group", ""), file("other", "o")), &top},
	}
	got, err := ReadFiles(context.Background(), ls, "/etc/passwd", "etc/group")
	if err != nil {
		t.Fatal(err)
	}
	if string(got["etc/passwd"]) != "new" {
		t.Errorf("passwd = %q, want the top-most version", got["etc/passwd"])
	}
	if _, ok := got["etc/group"]; ok {
		t.Errorf("group found, but the top layer deletes it")
	}
	if bottom != 0 || middle != 1 || top != 1 {
		t.Errorf("layer reads bottom=%d middle=%d top=%d, want 0 1 1", bottom, middle, top)
	}
}

func TestCacheUnpacksOncePerChain(t *testing.T) {
	var reads int
	ls := []v1.Layer{countingLayer{mkLayer(t, file("x", "x")), &reads}}
	c := &Cache{Dir: t.TempDir()}
	d1, err := c.Rootfs(context.Background(), ls)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := c.Rootfs(context.Background(), ls)
	if err != nil || d1 != d2 || reads != 1 {
		t.Errorf("second Rootfs: dir %s vs %s, reads %d, err %v; want the cached dir and one read", d1, d2, reads, err)
	}
	if data, _ := os.ReadFile(filepath.Join(d1, "x")); string(data) != "x" {
		t.Errorf("cached rootfs lacks x")
	}
}

func TestOpaqueMarkerLeadsItsDirectory(t *testing.T) {
	es := []Entry{file("d/a", "a"), dir("d", 0o755), file("d/.wh..wh..opq", ""), file("d/.hidden", "h")}
	var names []string
	l, err := New(func(tw *tar.Writer) error { return Write(tw, es, nil) }, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := l.Uncompressed()
	tr := tar.NewReader(rc)
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		names = append(names, h.Name)
	}
	if got := strings.Join(names, " "); got != "d/ d/.wh..wh..opq d/.hidden d/a" {
		t.Errorf("order %q", got)
	}
}

func TestDiffFindsAddedChangedAndDeleted(t *testing.T) {
	old, new := t.TempDir(), t.TempDir()
	mk := func(root, name, data string) {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(data), 0o644)
		os.Chtimes(p, time.Unix(100, 0), time.Unix(100, 0))
	}
	for _, root := range []string{old, new} {
		mk(root, "same/file", "x")
		mk(root, "changed", "old")
	}
	mk(old, "deleted/deep", "d")
	mk(old, "replaced", "file")
	mk(new, "changed", "new!")
	mk(new, "added/file", "a")
	mk(new, "replaced/inside", "i")
	entries, err := Diff(old, new)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name)
	}
	sort.Strings(got)
	want := ".wh.deleted added added/file changed replaced replaced/inside"
	if strings.Join(got, " ") != want {
		t.Errorf("diff = %q, want %q", strings.Join(got, " "), want)
	}
}

func TestCatalogStatSettlesFromTheTop(t *testing.T) {
	var bottom, top int
	ls := []v1.Layer{
		countingLayer{mkLayer(t, dir("usr", 0o755), dir("usr/bin", 0o755), file("gone", "x")), &bottom},
		countingLayer{mkLayer(t, file("usr/bin/tool", "t"), Entry{Header: tar.Header{Name: "bin", Typeflag: tar.TypeSymlink, Linkname: "usr/bin"}}, file(".wh.gone", "")), &top},
	}
	cat := &Catalog{}
	for name, want := range map[string]byte{"usr/bin": tar.TypeDir, "/bin": tar.TypeSymlink, "usr": tar.TypeDir} {
		h, err := cat.Stat(context.Background(), ls, name)
		if err != nil || h == nil || h.Typeflag != want {
			t.Errorf("Stat(%s) = %+v, %v; want type %c", name, h, err, want)
		}
	}
	if bottom != 0 {
		t.Errorf("the bottom layer was read %d times for paths the top one settles", bottom)
	}
	for _, name := range []string{"gone", "nowhere"} {
		if h, err := cat.Stat(context.Background(), ls, name); h != nil || err != nil {
			t.Errorf("Stat(%s) = %+v, %v; want nothing", name, h, err)
		}
	}
	if top != 1 || bottom != 1 {
		t.Errorf("layers read top=%d bottom=%d times, want once each", top, bottom)
	}
}

func TestLayerInAFileMatchesOneInMemory(t *testing.T) {
	es := []Entry{file("a", strings.Repeat("a", 1<<20)), file("b", "b")}
	write := func(tw *tar.Writer) error { return Write(tw, es, nil) }
	mem, err := New(write, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	disk, err := New(write, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	md, _ := mem.Digest()
	dd, _ := disk.Digest()
	ms, _ := mem.Size()
	ds, _ := disk.Size()
	if md != dd || ms != ds {
		t.Errorf("file-backed layer %s (%d bytes), in memory %s (%d bytes)", dd, ds, md, ms)
	}
	got, err := ReadFiles(context.Background(), []v1.Layer{disk}, "b")
	if err != nil || string(got["b"]) != "b" {
		t.Errorf("reading back from the file: %q %v", got["b"], err)
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 1 {
		t.Fatalf("the layer's bytes are not in one file of %s: %d files", dir, len(files))
	}
	os.Remove(filepath.Join(dir, files[0].Name()))
	if rc, err := disk.Compressed(); err == nil {
		rc.Close()
		t.Errorf("the layer still reads with its file gone: its bytes are kept in memory too")
	}
}

func TestLookupFollowsTheOverlayView(t *testing.T) {
	testkit.Require(t, os.Geteuid() == 0, "root, to make whiteouts (0/0 character devices)")
	low, mid, top := t.TempDir(), t.TempDir(), t.TempDir()
	writeFile(low, "usr/lib/a", "low a")
	writeFile(low, "etc/passwd", "low passwd")
	writeFile(low, "opq/old", "old")
	os.Symlink("usr/lib", filepath.Join(low, "lib"))
	writeFile(mid, "usr/lib/b", "mid b")
	if err := unix.Mknod(filepath.Join(mid, "etc-gone"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(top, "opq"), 0o755)
	unix.Setxattr(filepath.Join(top, "opq"), "user.overlay.opaque", []byte("y"), 0)
	writeFile(top, "opq/new", "new")
	os.MkdirAll(filepath.Join(top, "etc"), 0o755)
	if err := unix.Mknod(filepath.Join(top, "etc/passwd"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	dirs := []string{low, mid, top}
	for p, want := range map[string]string{"/lib/a": "low a", "/lib/b": "mid b", "opq/new": "new"} {
		host, err := Lookup(dirs, p)
		data, _ := os.ReadFile(host)
		if err != nil || string(data) != want {
			t.Errorf("Lookup(%s) = %s (%q), %v; want %q", p, host, data, err, want)
		}
	}
	for _, p := range []string{"etc/passwd", "opq/old", "nowhere/x"} {
		if host, err := Lookup(dirs, p); err == nil {
			t.Errorf("Lookup(%s) = %s, want not found", p, host)
		}
	}
}

// security.capability travels from a layer to the disk and back.
func TestFileCapabilitiesRoundTrip(t *testing.T) {
	testkit.Require(t, os.Geteuid() == 0, "root, to set security.capability")
	capV2 := string([]byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}) // cap_net_bind_service, v2
	e := file("ping", "binary")
	e.PAXRecords = map[string]string{paxXattr + "security.capability": capV2}
	root := t.TempDir()
	if err := Unpack(context.Background(), root, []v1.Layer{mkLayer(t, e)}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := unix.Getxattr(filepath.Join(root, "ping"), "security.capability", buf)
	if err != nil || string(buf[:n]) != capV2 {
		t.Fatalf("on disk: %q, %v", buf[:n], err)
	}
	back, err := EntryFor(filepath.Join(root, "ping"), "ping")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Write(tar.NewWriter(&b), []Entry{back}, nil); err != nil {
		t.Fatal(err)
	}
	h, err := tar.NewReader(&b).Next()
	if err != nil || h.PAXRecords[paxXattr+"security.capability"] != capV2 {
		t.Errorf("written again: %v, %v", h, err)
	}
}

// Device nodes, fifos, owners and times survive an unpack as root.
func TestUnpackNodesOwnersAndTimes(t *testing.T) {
	testkit.Require(t, os.Geteuid() == 0, "root, to make device nodes and give files away")
	when := time.Unix(1234567890, 0)
	null := Entry{Header: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}}
	fifo := Entry{Header: tar.Header{Name: "run/fifo", Typeflag: tar.TypeFifo, Mode: 0o600}}
	owned := file("home/app/f", "x")
	owned.Uid, owned.Gid, owned.ModTime = 1000, 50, when
	root := t.TempDir()
	if err := Unpack(context.Background(), root, []v1.Layer{mkLayer(t, null, fifo, owned)}); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "dev/null"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Errorf("dev/null: %v mode %o rdev %d:%d", err, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if err := unix.Lstat(filepath.Join(root, "run/fifo"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("run/fifo: %v mode %o", err, st.Mode)
	}
	fi, err := os.Lstat(filepath.Join(root, "home/app/f"))
	if err != nil {
		t.Fatal(err)
	}
	s := fi.Sys().(*syscall.Stat_t)
	if s.Uid != 1000 || s.Gid != 50 || !fi.ModTime().Equal(when) {
		t.Errorf("home/app/f: %d:%d %v, want 1000:50 %v", s.Uid, s.Gid, fi.ModTime(), when)
	}
}

// BenchmarkChangesOfOneFile measures capturing a step that changed one file
// of a root filesystem of 2,000 and of 20,000 files: the cost follows the
// change (the upper directory), not the size of the root filesystem.
func BenchmarkChangesOfOneFile(b *testing.B) {
	for _, n := range []int{2000, 20000} {
		b.Run(fmt.Sprintf("rootfs=%d", n), func(b *testing.B) {
			lower, upper := b.TempDir(), b.TempDir()
			for i := range n {
				p := filepath.Join(lower, "usr", fmt.Sprintf("d%03d", i%200), fmt.Sprintf("f%05d", i))
				os.MkdirAll(filepath.Dir(p), 0o755)
				os.WriteFile(p, []byte("x"), 0o644)
			}
			os.MkdirAll(filepath.Join(upper, "usr", "d007"), 0o755)
			os.WriteFile(filepath.Join(upper, "usr", "d007", "f00007"), []byte("changed"), 0o644)
			for b.Loop() {
				es, err := Changes(upper, []string{lower}, ChangeOptions{})
				if err != nil || len(es) != 3 {
					b.Fatalf("%d entries, %v; want the file and its two parents", len(es), err)
				}
			}
		})
	}
}

// BenchmarkStepOfManyFiles measures what follows a step that made 5,000
// small files (the benchmark's run case): reading its changes from the
// upper directory, and writing them as a compressed layer. The files are
// on /dev/shm when it is there, as a step's on the memory scratch are.
func BenchmarkStepOfManyFiles(b *testing.B) {
	dir := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dir = "/dev/shm"
	}
	lower := b.TempDir()
	upper, err := os.MkdirTemp(dir, "manifold-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(upper) })
	os.MkdirAll(filepath.Join(upper, "data"), 0o755)
	for i := 1; i <= 5000; i++ {
		os.WriteFile(filepath.Join(upper, "data", fmt.Sprintf("f%d", i)), fmt.Appendf(nil, "%d\n", i), 0o644)
	}
	out := b.TempDir()
	b.Run("changes", func(b *testing.B) {
		for b.Loop() {
			if es, err := Changes(upper, []string{lower}, ChangeOptions{}); err != nil || len(es) != 5001 {
				b.Fatalf("%d entries, %v", len(es), err)
			}
		}
	})
	es, err := Changes(upper, []string{lower}, ChangeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("layer", func(b *testing.B) {
		for b.Loop() {
			if _, err := New(func(tw *tar.Writer) error { return Write(tw, es, nil) }, Options{Dir: out}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("both-at-once", func(b *testing.B) {
		for b.Loop() {
			if _, err := NewFromChanges(upper, []string{lower}, ChangeOptions{}, nil, Options{Dir: out}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The layer written while the changes are read is the one written from
// them sorted; no changes, no layer.
func TestNewFromChangesIsTheSortedLayer(t *testing.T) {
	testkit.RequireRoot(t, "deletions in an upper directory are character devices: root makes them")
	lower, upper := t.TempDir(), t.TempDir()
	if l, err := NewFromChanges(upper, []string{lower}, ChangeOptions{}, nil, Options{}); l != nil || err != nil {
		t.Fatalf("no changes gave %v, %v; want no layer", l, err)
	}
	for _, f := range []string{"etc/b", "etc/c", "usr/bin/x"} {
		os.MkdirAll(filepath.Join(lower, filepath.Dir(f)), 0o755)
		os.WriteFile(filepath.Join(lower, f), []byte(f), 0o644)
	}
	os.MkdirAll(filepath.Join(upper, "etc"), 0o755)
	os.WriteFile(filepath.Join(upper, "etc", "b"), []byte("new b"), 0o644)
	unix.Mknod(filepath.Join(upper, "etc", "c"), unix.S_IFCHR, 0) // deleted, and its .wh. name sorts first
	os.MkdirAll(filepath.Join(upper, "data", "sub"), 0o755)
	for i := range 300 {
		os.WriteFile(filepath.Join(upper, "data", fmt.Sprintf("f%d", i)), []byte{byte(i)}, 0o644)
	}
	got, err := NewFromChanges(upper, []string{lower}, ChangeOptions{}, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	es, err := Changes(upper, []string{lower}, ChangeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, err := New(func(tw *tar.Writer) error { return Write(tw, es, nil) }, Options{})
	if err != nil {
		t.Fatal(err)
	}
	gd, _ := got.Digest()
	wd, _ := want.Digest()
	if gd != wd {
		t.Errorf("written while read: %s, written sorted: %s", gd, wd)
	}
}

// A step's files go into its layer whole, with their capabilities, those
// read ahead of the tar stream (small) as those read in it (large), and a
// second name of a file as a link with them too, as in BuildKit's layers;
// a file that shrank after it was listed fails the layer, and says which.
func TestNewFromChangesReadsFilesWhole(t *testing.T) {
	testkit.Require(t, os.Geteuid() == 0, "root, to set security.capability")
	capV2 := string([]byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	lower, upper := t.TempDir(), t.TempDir()
	small, large := []byte("small file"), bytes.Repeat([]byte("0123456789abcdef"), filledBelow/8)
	for name, data := range map[string][]byte{"bin/small": small, "bin/large": large} {
		p := filepath.Join(upper, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "security.capability", []byte(capV2), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(upper, "bin/small"), filepath.Join(upper, "bin/small2")); err != nil {
		t.Fatal(err)
	}
	l, err := NewFromChanges(upper, []string{lower}, ChangeOptions{}, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		got[h.Name] = fmt.Sprintf("%d bytes, same %t, capability %t", len(data),
			bytes.Equal(data, small) || bytes.Equal(data, large), h.PAXRecords[paxXattr+"security.capability"] == capV2)
		if h.Typeflag == tar.TypeLink {
			got[h.Name] += ", a link to " + h.Linkname
		}
	}
	want := map[string]string{
		"bin/":       "0 bytes, same false, capability false",
		"bin/large":  fmt.Sprintf("%d bytes, same true, capability true", len(large)),
		"bin/small":  fmt.Sprintf("%d bytes, same true, capability true", len(small)),
		"bin/small2": "0 bytes, same false, capability true, a link to bin/small",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("layer entries (-want +got):\n%s", diff)
	}

	shrinks := t.TempDir()
	os.WriteFile(filepath.Join(shrinks, "f"), small, 0o644)
	es, err := Changes(shrinks, []string{lower}, ChangeOptions{})
	if err != nil || len(es) != 1 {
		t.Fatalf("%v, %v", es, err)
	}
	os.WriteFile(filepath.Join(shrinks, "f"), []byte("x"), 0o644)
	var src sources
	defer src.close()
	src.fill(&es[0])
	err = src.writeEntry(tar.NewWriter(io.Discard), es[0])
	if err == nil || !strings.Contains(err.Error(), "f: file changed size") {
		t.Errorf("a file that shrank: %v", err)
	}
}

// A layer unpacked as a snapshot keeps its deletions and opaque markers in
// overlayfs's format, and a mount of it over the layer below shows what
// applying both layers shows.
func TestDiffSnapshotStacksLikeTheLayers(t *testing.T) {
	testkit.RequireRoot(t, "to make overlayfs whiteouts and mount overlays")
	lower := mkLayer(t,
		Entry{Header: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
		Entry{Header: tar.Header{Name: "etc/group", Typeflag: tar.TypeReg, Mode: 0o644}, Data: []byte("g")},
		Entry{Header: tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, Data: []byte("p")},
		Entry{Header: tar.Header{Name: "root/", Typeflag: tar.TypeDir, Mode: 0o700}},
		Entry{Header: tar.Header{Name: "root/old", Typeflag: tar.TypeReg, Mode: 0o644}, Data: []byte("o")},
	)
	top := mkLayer(t,
		Entry{Header: tar.Header{Name: "etc/.wh.group", Typeflag: tar.TypeReg}},
		Entry{Header: tar.Header{Name: "root/", Typeflag: tar.TypeDir, Mode: 0o700}},
		Entry{Header: tar.Header{Name: "root/.wh..wh..opq", Typeflag: tar.TypeReg}},
		Entry{Header: tar.Header{Name: "root/new", Typeflag: tar.TypeReg, Mode: 0o644}, Data: []byte("n")},
	)
	c := &Cache{Dir: t.TempDir()}
	base, err := c.Rootfs(context.Background(), []v1.Layer{lower})
	if err != nil {
		t.Fatal(err)
	}
	diff, err := c.Diff(context.Background(), []v1.Layer{lower, top}, []string{base})
	if err != nil {
		t.Fatal(err)
	}
	work, merged := t.TempDir(), t.TempDir()
	upper := t.TempDir()
	opts := fmt.Sprintf("lowerdir=%s:%s,upperdir=%s,workdir=%s,userxattr", diff, base, upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mounting the snapshot over its base: %v", err)
	}
	defer unix.Unmount(merged, 0)
	want := t.TempDir()
	if err := Unpack(context.Background(), want, []v1.Layer{lower, top}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"etc/group", "etc/passwd", "root/old", "root/new"} {
		_, gerr := os.Lstat(filepath.Join(merged, p))
		_, werr := os.Lstat(filepath.Join(want, p))
		if (gerr == nil) != (werr == nil) {
			t.Errorf("%s: in the overlay %v, unpacked %v", p, gerr, werr)
		}
	}
}

// A directory that a step removed and made again (opaque in the upper
// directory) becomes, as in BuildKit's layers, a deletion for each name the
// lower layers show there that the step did not make again, at every depth,
// and no opaque marker.
func TestChangesListDeletionsInAReplacedDirectory(t *testing.T) {
	testkit.Require(t, os.Geteuid() == 0, "root, to mark an overlayfs directory opaque")
	low, mid, upper := t.TempDir(), t.TempDir(), t.TempDir()
	writeFile(low, "root/old", "o")
	writeFile(low, "root/sub/f", "f")
	writeFile(low, "root/gone", "g")
	os.MkdirAll(filepath.Join(mid, "root"), 0o755)
	if err := unix.Mknod(filepath.Join(mid, "root/gone"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	writeFile(mid, "root/mid", "m")
	writeFile(upper, "root/new", "n")
	os.MkdirAll(filepath.Join(upper, "root/sub"), 0o755)
	if err := unix.Setxattr(filepath.Join(upper, "root"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	es, err := Changes(upper, []string{low, mid}, ChangeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name)
	}
	slices.Sort(names)
	if got, want := strings.Join(names, " "), "root root/.wh.mid root/.wh.old root/new root/sub root/sub/.wh.f"; got != want {
		t.Errorf("entries %q, want %q", got, want)
	}
}

// writeFile writes data to name under root, making its directories.
func writeFile(root, name, data string) {
	p := filepath.Join(root, name)
	os.MkdirAll(filepath.Dir(p), 0o755)
	os.WriteFile(p, []byte(data), 0o644)
}

// A symlink of a lower layer is never followed on the host when a path is
// looked up through it: a later layer that made the link's path a
// directory shows only what that directory holds, not where the link led.
func TestLookupFollowsNoLowerLinkOutOfTheStack(t *testing.T) {
	low, top, outside := t.TempDir(), t.TempDir(), t.TempDir()
	writeFile(outside, "secret", "host file")
	os.Symlink(outside, filepath.Join(low, "etc2"))
	os.MkdirAll(filepath.Join(top, "etc2"), 0o755)
	if p, err := Lookup([]string{low, top}, "/etc2/secret"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lookup(/etc2/secret) = %q, %v; want nothing there, not the host's file", p, err)
	}
	h, err := StatStack([]string{low, top}, "etc2/secret")
	if err != nil || h != nil {
		t.Errorf("StatStack(etc2/secret) = %+v, %v; want nothing", h, err)
	}
}
