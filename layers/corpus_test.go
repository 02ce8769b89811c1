package layers

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"

	"github.com/manifold-build/manifold/assemble/testkit"
)

// rawLayer is a layer of any bytes at all, however broken.
type rawLayer struct{ tarball []byte }

func (l rawLayer) Digest() (v1.Hash, error) {
	b, _ := io.ReadAll(must(l.Compressed()))
	h, _, err := v1.SHA256(bytes.NewReader(b))
	return h, err
}
func (l rawLayer) DiffID() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(l.tarball))
	return h, err
}
func (l rawLayer) Size() (int64, error)                { return -1, nil }
func (l rawLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l rawLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.tarball)), nil
}
func (l rawLayer) Compressed() (io.ReadCloser, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(l.tarball)
	zw.Close()
	return io.NopCloser(&buf), nil
}

func must(rc io.ReadCloser, _ error) io.ReadCloser { return rc }

func link(name, target string) Entry {
	return Entry{Header: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}}
}

func hardlink(name, target string) Entry {
	return Entry{Header: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}}
}

func node(name string, typ byte, major, minor int64) Entry {
	return Entry{Header: tar.Header{Name: name, Typeflag: typ, Mode: 0o666, Devmajor: major, Devminor: minor}}
}

// paxHeader is a tar header block of type typ, written by hand: for what
// Go's tar writer will not write.
func paxHeader(name string, typ byte, size int) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], "00000000000\x00")
	b[156] = typ
	copy(b[257:265], "ustar\x0000")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func padded(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

func paxRecord(k, v string) string {
	n := len(k) + len(v) + 3
	for {
		rec := fmt.Sprintf("%d %s=%s\n", n, k, v)
		if len(rec) == n {
			return rec
		}
		n = len(rec)
	}
}

// sparseTar is a tar of one GNU sparse (format 1.0) file of size bytes
// that holds just 512 bytes of data, at its end: a few hundred bytes that
// declare a huge file.
func sparseTar(name string, size int64) []byte {
	recs := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
		paxRecord("GNU.sparse.name", name) + paxRecord("GNU.sparse.realsize", fmt.Sprint(size))
	sparseMap := padded([]byte(fmt.Sprintf("1\n%d\n512\n", size-512)))
	data := append(sparseMap, bytes.Repeat([]byte("x"), 512)...)
	var out []byte
	out = append(out, paxHeader("PaxHeaders/"+name, 'x', len(recs))...)
	out = append(out, padded([]byte(recs))...)
	out = append(out, paxHeader("GNUSparseFile.0/"+name, '0', len(data))...)
	out = append(out, data...)
	return append(out, make([]byte, 1024)...)
}

func tarBytes(t *testing.T, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Header
		h.Size = int64(len(e.Data))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.Data)
	}
	tw.Close()
	return buf.Bytes()
}

// zeroFile is a tar of one file of n zero bytes (a gzip bomb, compressed).
func zeroFile(name string, n int64) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: n})
	io.CopyN(tw, zeroReader{}, n)
	tw.Close()
	return buf.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type corpusCase struct {
	name string
	// layers builds the case's layers; outside is a directory next to the
	// root, with a file "sentinel" in it.
	layers func(t *testing.T, outside string) []v1.Layer
	// fails: the unpack must fail (true), must not (false), or may (nil).
	fails *bool
	check func(t *testing.T, root, outside, mode string)
}

var yes, no = ptr(true), ptr(false)

func ptr(b bool) *bool { return &b }

func entries(es ...Entry) func(*testing.T, string) []v1.Layer {
	return func(t *testing.T, _ string) []v1.Layer { return []v1.Layer{rawLayer{tarBytes(t, es...)}} }
}

func fileHas(t *testing.T, p, want string) {
	t.Helper()
	if got, err := os.ReadFile(p); err != nil || string(got) != want {
		t.Errorf("%s = %q, %v; want %q", p, got, err, want)
	}
}

func blocks(t *testing.T, p string) (size, disk int64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Size, st.Blocks * 512
}

func corpus() []corpusCase {
	capV2 := string([]byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	withXattrs := file("x", "attrs")
	withXattrs.PAXRecords = map[string]string{
		paxXattr + "trusted.overlay.opaque": "y", paxXattr + "trusted.evil": "1",
		paxXattr + "security.selinux": "system_u:object_r:shadow_t:s0", paxXattr + "security.ima": "x",
		paxXattr + "user.ok": "1", paxXattr + "security.capability": capV2,
	}
	return []corpusCase{
		{name: "dotdot-name", layers: entries(file("../escaped", "x")), fails: yes},
		{name: "dotdot-inside-name", layers: entries(file("a/../../escaped", "x")), fails: yes},
		{name: "absolute-name", layers: entries(file("/abs", "x")), fails: no,
			check: func(t *testing.T, root, _, _ string) { fileHas(t, filepath.Join(root, "abs"), "x") }},
		{name: "absolute-symlink-then-write", fails: no,
			layers: func(t *testing.T, out string) []v1.Layer {
				return []v1.Layer{rawLayer{tarBytes(t, link("out", out), file("out/pwned", "x"))}}
			},
			check: func(t *testing.T, root, out, _ string) { fileHas(t, filepath.Join(root, out, "pwned"), "x") }},
		{name: "climbing-symlink-then-write", layers: entries(link("up", "../../../../.."), file("up/pwned", "x")), fails: no,
			check: func(t *testing.T, root, _, _ string) { fileHas(t, filepath.Join(root, "pwned"), "x") }},
		{name: "chained-symlinks", layers: entries(dir("c", 0o755), link("a", "b"), link("b", "c/../../.."), file("a/pwned", "x")), fails: no,
			check: func(t *testing.T, root, _, _ string) { fileHas(t, filepath.Join(root, "pwned"), "x") }},
		{name: "symlink-loop", layers: entries(link("l1", "l2"), link("l2", "l1"), file("l1/x", "x")), fails: yes},
		{name: "symlink-replaced-by-file", fails: no,
			layers: func(t *testing.T, out string) []v1.Layer {
				return []v1.Layer{rawLayer{tarBytes(t, link("f", filepath.Join(out, "sentinel")), file("f", "mine"))}}
			},
			check: func(t *testing.T, root, _, _ string) { fileHas(t, filepath.Join(root, "f"), "mine") }},
		{name: "symlink-in-lower-layer-written-through", fails: no,
			layers: func(t *testing.T, out string) []v1.Layer {
				return []v1.Layer{rawLayer{tarBytes(t, link("etc", out))}, rawLayer{tarBytes(t, file("etc/sentinel", "pwned"))}}
			},
			check: func(t *testing.T, root, out, _ string) { fileHas(t, filepath.Join(root, out, "sentinel"), "pwned") }},
		{name: "hardlink-dotdot", layers: entries(hardlink("h", "../outside/sentinel")), fails: yes},
		{name: "hardlink-absolute", fails: yes,
			layers: func(t *testing.T, out string) []v1.Layer {
				return []v1.Layer{rawLayer{tarBytes(t, hardlink("h", filepath.Join(out, "sentinel")))}}
			}},
		{name: "hardlink-through-symlink", fails: yes,
			layers: func(t *testing.T, out string) []v1.Layer {
				return []v1.Layer{rawLayer{tarBytes(t, link("out", out), hardlink("h", "out/sentinel"))}}
			}},
		{name: "hardlink-then-overwritten", layers: entries(file("f", "orig"), hardlink("h", "f"), file("h", "new")), fails: no,
			check: func(t *testing.T, root, _, _ string) {
				fileHas(t, filepath.Join(root, "f"), "orig")
				fileHas(t, filepath.Join(root, "h"), "new")
			}},
		{name: "whiteout-through-symlink", fails: no,
			layers: func(t *testing.T, out string) []v1.Layer {
				return []v1.Layer{rawLayer{tarBytes(t, link("out", out))}, rawLayer{tarBytes(t, file("out/.wh.sentinel", ""))}}
			}},
		{name: "opaque-through-symlink", fails: no,
			layers: func(t *testing.T, out string) []v1.Layer {
				return []v1.Layer{rawLayer{tarBytes(t, link("out", out))}, rawLayer{tarBytes(t, file("out/.wh..wh..opq", ""))}}
			}},
		{name: "opaque-under-missing-dir", layers: entries(file("nodir/sub/.wh..wh..opq", "")), fails: no},
		{name: "whiteout-of-dot", layers: entries(file("keep", "k"), file(".wh..", "")), fails: yes},
		{name: "whiteout-of-dotdot", layers: entries(file("a/.wh...", "")), fails: yes},
		{name: "char-device", layers: entries(node("dev/null", tar.TypeChar, 1, 3)), fails: no,
			check: func(t *testing.T, root, _, mode string) {
				fi, err := os.Lstat(filepath.Join(root, "dev/null"))
				if mode == "root" && (err != nil || fi.Mode()&fs.ModeCharDevice == 0) {
					t.Errorf("dev/null: %v %v, want a character device", fi, err)
				}
			}},
		{name: "block-device", layers: entries(node("dev/sda", tar.TypeBlock, 8, 0), file("after", "a")), fails: no,
			check: func(t *testing.T, root, _, _ string) { fileHas(t, filepath.Join(root, "after"), "a") }},
		{name: "device-over-symlink", fails: no,
			layers: func(t *testing.T, out string) []v1.Layer {
				return []v1.Layer{rawLayer{tarBytes(t, link("null", filepath.Join(out, "sentinel")), node("null", tar.TypeChar, 1, 3))}}
			}},
		{name: "fifo", layers: entries(node("run/fifo", tar.TypeFifo, 0, 0)), fails: no,
			check: func(t *testing.T, root, _, _ string) {
				if fi, err := os.Lstat(filepath.Join(root, "run/fifo")); err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
					t.Errorf("run/fifo: %v %v, want a fifo", fi, err)
				}
			}},
		{name: "setuid-file", layers: entries(Entry{Header: tar.Header{Name: "bin/su", Typeflag: tar.TypeReg, Mode: 0o4755}, Data: []byte("su")}), fails: no,
			check: func(t *testing.T, root, _, _ string) {
				if fi, err := os.Stat(filepath.Join(root, "bin/su")); err != nil || fi.Mode()&fs.ModeSetuid == 0 {
					t.Errorf("bin/su: %v %v, want setuid kept inside the root", fi, err)
				}
			}},
		{name: "huge-sparse-file", fails: no,
			layers: func(*testing.T, string) []v1.Layer { return []v1.Layer{rawLayer{sparseTar("big", 8<<30)}} },
			check: func(t *testing.T, root, _, _ string) {
				size, disk := blocks(t, filepath.Join(root, "big"))
				if size != 8<<30 || disk > 1<<20 {
					t.Errorf("big: %d bytes taking %d on disk, want 8 GiB in holes", size, disk)
				}
			}},
		{name: "gzip-bomb-of-zeros", fails: no,
			layers: func(*testing.T, string) []v1.Layer { return []v1.Layer{rawLayer{zeroFile("zeros", 256<<20)}} },
			check: func(t *testing.T, root, _, _ string) {
				size, disk := blocks(t, filepath.Join(root, "zeros"))
				if size != 256<<20 || disk > 1<<20 {
					t.Errorf("zeros: %d bytes taking %d on disk, want 256 MiB in holes", size, disk)
				}
			}},
		{name: "truncated-stream", fails: yes,
			layers: func(t *testing.T, _ string) []v1.Layer {
				b := tarBytes(t, file("a", strings.Repeat("a", 4096)), file("b", strings.Repeat("b", 4096)))
				return []v1.Layer{rawLayer{b[:len(b)/2]}}
			}},
		{name: "xattrs", layers: entries(withXattrs), fails: no,
			check: func(t *testing.T, root, _, mode string) {
				p := filepath.Join(root, "x")
				for _, attr := range []string{"trusted.overlay.opaque", "trusted.evil", "security.selinux", "security.ima"} {
					if _, err := unix.Lgetxattr(p, attr, make([]byte, 256)); err == nil {
						t.Errorf("x has xattr %s, which a layer must never set", attr)
					}
				}
				if mode == "root" {
					if n, err := unix.Lgetxattr(p, "user.ok", make([]byte, 16)); err != nil || n != 1 {
						t.Errorf("x lacks user.ok: %v", err)
					}
				}
			}},
		{name: "directory-replaced-by-absolute-symlink", fails: no,
			layers: func(t *testing.T, out string) []v1.Layer {
				return []v1.Layer{rawLayer{tarBytes(t, dir("d3", 0o755), file("d3/f", "f"), link("d3", out))}}
			}},
		{name: "directory-replaced-by-climbing-symlink", layers: entries(dir("d4", 0o755), dir("d4/sub", 0o700), link("d4", "../../..")), fails: no},
		{name: "long-name", layers: entries(file(strings.Repeat("n", 64<<10), "x")), fails: yes},
		{name: "file-under-a-file", layers: entries(file("f", "f"), file("f/x", "x")), fails: nil},
		{name: "root-entry", layers: entries(dir("./", 0o777), file("a", "a")), fails: no},
		{name: "directory-over-symlink", fails: no,
			layers: func(t *testing.T, out string) []v1.Layer {
				return []v1.Layer{rawLayer{tarBytes(t, link("etc", out), dir("etc", 0o755), file("etc/passwd", "p"))}}
			},
			check: func(t *testing.T, root, _, _ string) { fileHas(t, filepath.Join(root, "etc/passwd"), "p") }},
	}
}

// treeState describes a tree: names, types, modes, sizes, times, link
// targets and contents.
func treeState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %v %d %d %d nlink=%d", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano(), st.Uid, st.Nlink)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			fmt.Fprintf(&b, " -> %s", target)
		case fi.Mode().IsRegular():
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " %x", sha256.Sum256(data))
		}
		b.WriteString("\n")
		return nil
	})
	return b.String()
}

const corpusMode = "MANIFOLD_CORPUS_MODE"

// Crafted layers, at least 25 kinds, unpacked as root, as root of a user
// namespace (rootless with subordinate IDs) and as an unprivileged user:
// nothing outside the root changes, each fails or not as it should, and
// what it unpacks is what it should be.
func TestCraftedLayers(t *testing.T) {
	mode := os.Getenv(corpusMode)
	if mode == "" {
		testkit.RequireRoot(t, "to unpack as root and to start the rootless unpacks")
		mode = "root"
		t.Run("userns", func(t *testing.T) { corpusChild(t, "userns") })
		t.Run("unprivileged", func(t *testing.T) { corpusChild(t, "unprivileged") })
	}
	cases := corpus()
	if len(cases) < 25 {
		t.Fatalf("%d kinds of crafted layer, want at least 25", len(cases))
	}
	warned := ""
	Warn = func(msg string) { warned = msg }
	defer func() { Warn = func(msg string) { fmt.Fprintf(os.Stderr, "manifold: warning: %s\n", msg) } }()
	for _, c := range cases {
		t.Run(mode+"/"+c.name, func(t *testing.T) {
			parent := t.TempDir()
			root, outside := filepath.Join(parent, "root"), filepath.Join(parent, "outside")
			os.Mkdir(root, 0o755)
			os.Mkdir(outside, 0o755)
			os.WriteFile(filepath.Join(outside, "sentinel"), []byte("keep"), 0o644)
			before := treeState(t, outside)
			ls := c.layers(t, outside)
			// As a RUN step's lower directories too: each layer on its own
			// in overlayfs's format, whatever becomes of it.
			var below []string
			for i, l := range ls {
				d := filepath.Join(t.TempDir(), fmt.Sprint("diff", i))
				os.Mkdir(d, 0o755)
				UnpackDiff(context.Background(), d, l, below)
				below = append(below, d)
			}
			err := Unpack(context.Background(), root, ls)
			if after := treeState(t, outside); after != before {
				t.Fatalf("the unpack changed what is outside its root:\nbefore:\n%safter:\n%s", before, after)
			}
			if names, _ := os.ReadDir(parent); len(names) != 2 {
				t.Errorf("the unpack made %v next to its root", names)
			}
			if err != nil && len(err.Error()) > 1000 {
				t.Errorf("error of %d bytes, want a short one: %.300s...", len(err.Error()), err)
			}
			switch {
			case c.fails != nil && *c.fails && err == nil:
				t.Fatal("unpacked without error, want one")
			case c.fails != nil && !*c.fails && err != nil:
				t.Fatalf("unpack: %v", err)
			}
			if err == nil && c.check != nil {
				c.check(t, root, outside, mode)
			}
		})
	}
	if mode != "root" && !strings.Contains(warned, "device nodes") {
		t.Errorf("no warning about the device nodes left out (warned %q)", warned)
	}
}

// corpusChild runs the corpus again in a child process: as root of a new
// user namespace whose IDs map to unprivileged ones (what a rootless
// manifold with subordinate IDs is), or as the unprivileged user nobody.
func corpusChild(t *testing.T, mode string) {
	shared, err := os.MkdirTemp("", "manifold-corpus-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(shared)
	os.Chmod(shared, 0o777)
	self, _ := os.Executable()
	bin := filepath.Join(shared, "layers.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestCraftedLayers$", "-test.v")
	cmd.Env = append(os.Environ(), corpusMode+"="+mode, "TMPDIR="+shared, "CI=")
	switch mode {
	case "userns":
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 200000, Size: 65536}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 200000, Size: 65536}}}
	default:
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the corpus as %s: %v\n%s", mode, err, out)
	}
	if !bytes.Contains(out, []byte("--- PASS: TestCraftedLayers")) {
		t.Fatalf("the corpus as %s did not run:\n%s", mode, out)
	}
}
