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
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// Unpack applies layers, bottom first, to the directory dir. Every write goes
// through an os.Root, so no entry (nor a symlink planted by an earlier one)
// can reach outside dir.
func Unpack(ctx context.Context, dir string, ls []v1.Layer) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for i, l := range ls {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := readLayer(l, newApplier(ctx, root).apply); err != nil {
			d, _ := l.Digest()
			return fmt.Errorf("unpacking layer %d (%s): %w", i+1, d, err)
		}
	}
	return nil
}

// UnpackDiff unpacks one layer into the empty directory dir in overlayfs's
// format, to stack as a lower directory on below, the directories of the
// layers under it (bottom first): a
// deletion becomes a 0/0 character device, an opaque marker the
// user.overlay.opaque xattr (what an overlay mounted with userxattr reads).
// Making those devices takes root: without it, ErrNeedsRoot.
func UnpackDiff(ctx context.Context, dir string, l v1.Layer, below []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	a := newApplier(ctx, root)
	a.diff = true
	if err := readLayer(l, a.apply); err != nil {
		d, _ := l.Digest()
		return fmt.Errorf("unpacking layer %d (%s): %w", len(below)+1, d, err)
	}
	return a.inherit(below)
}

// ErrNeedsRoot is a diff layer with deletions, unpacked without root.
var ErrNeedsRoot = errors.New("making overlayfs whiteouts needs root")

// readLayer hands l's tar stream to fn, then reads what fn left of it to
// the end: a layer's checks at its end (its digests, the compression's
// trailer) then run on every read, whatever fn needed.
func readLayer(l v1.Layer, fn func(*tar.Reader) error) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := fn(tar.NewReader(rc)); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, rc)
	return err
}

func newApplier(ctx context.Context, root *os.Root) *applier {
	return &applier{ctx: ctx, root: root, seen: map[string]bool{}, unprivileged: os.Geteuid() != 0}
}

func (a *applier) apply(tr *tar.Reader) error {
	for {
		if err := a.ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := a.entry(h, tr); err != nil {
			return fmt.Errorf("%s: %w", shortName(h.Name), shortPaths(err))
		}
	}
	return a.finish()
}

type applier struct {
	ctx          context.Context // an interrupted build stops between entries
	root         *os.Root
	seen         map[string]bool // names this layer wrote, spared by an opaque marker
	opaque       []string
	dirTimes     []dirTime
	unprivileged bool
	diff         bool            // overlayfs's format: deletions and opaque markers are kept, not applied
	implied      map[string]bool // diff: parent directories made without an entry of their own

	skippedDevice string // the first device node that could not be made
}

// errSkipped is an entry left out on purpose.
var errSkipped = errors.New("skipped")

// Warn tells the user what an unpack left out; by default on standard
// error.
var Warn = func(msg string) { fmt.Fprintf(os.Stderr, "manifold: warning: %s\n", msg) }

var warnDevices sync.Once

// noteImplied records the directories of dir that do not exist yet: made
// for an entry below them, they are not the layer's to describe.
func (a *applier) noteImplied(dir string) {
	for d := dir; d != "." && d != "/" && d != ""; d = path.Dir(d) {
		if _, err := a.root.Lstat(d); err == nil {
			return
		}
		if a.implied == nil {
			a.implied = map[string]bool{}
		}
		a.implied[d] = true
	}
}

// inherit gives the directories a diff layer made without entries the
// mode, owner and times they have in the layers below (below: their
// directories in overlayfs's format, bottom first), so that stacked on
// them the snapshot hides nothing: unpacking never invents metadata that
// the layers state elsewhere.
func (a *applier) inherit(below []string) error {
	for d := range a.implied {
		if a.seen[d] {
			continue // the layer describes it after all
		}
		host, err := Lookup(below, d)
		if err != nil {
			continue // nowhere below either: 0755 and root's, as every reader makes it
		}
		fi, err := os.Lstat(host)
		st, ok := fi.Sys().(*syscall.Stat_t)
		if err != nil || !fi.IsDir() || !ok {
			continue
		}
		if err := a.root.Chmod(d, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
		if err := a.root.Lchown(d, int(st.Uid), int(st.Gid)); err != nil && !a.unprivileged {
			return err
		}
		if err := a.root.Chtimes(d, fi.ModTime(), fi.ModTime()); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) entry(h *tar.Header, r io.Reader) error {
	name, err := cleanName(h.Name)
	if err != nil || name == "" {
		return err
	}
	dir, base := splitName(name)
	if dir, err = resolveLinks(dir, a.link); err != nil {
		return err
	}
	name = path.Join(dir, base)
	if target, ok := strings.CutPrefix(base, whPrefix); ok && (target == "" || target == "." || target == "..") {
		return fmt.Errorf("whiteout %q names no file", base)
	}
	if p, opaque, ok := marker(name); ok {
		switch {
		case a.diff:
			return a.overlayMarker(p, opaque)
		case opaque:
			a.opaque = append(a.opaque, p)
			return nil
		}
		return a.root.RemoveAll(p)
	}
	a.seen[name] = true
	if dir != "" {
		if a.diff {
			a.noteImplied(dir)
		}
		if err := a.root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if err := a.clear(name, h.Typeflag == tar.TypeDir); err != nil {
		return err
	}
	if err := a.create(name, h, r); err != nil {
		if err == errSkipped {
			return nil
		}
		return err
	}
	return a.attributes(name, h)
}

// link tells resolveLinks about the tree being unpacked. An entry's
// directory is resolved as if the root were "/" (as containerd does: an
// absolute or climbing link is re-rooted, never followed out); the os.Root
// that every write goes through keeps even a racing link inside.
func (a *applier) link(rel string) (string, bool, error) {
	fi, err := a.root.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) || err == nil && fi.Mode()&fs.ModeSymlink == 0 {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	target, err := a.root.Readlink(rel)
	return target, true, err
}

// clear removes what stands at name unless both it and the new entry are
// directories, which merge.
func (a *applier) clear(name string, dir bool) error {
	fi, err := a.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil || (dir && fi.IsDir()) {
		return err
	}
	return a.root.RemoveAll(name)
}

func (a *applier) create(name string, h *tar.Header, r io.Reader) error {
	mode := h.FileInfo().Mode()
	switch h.Typeflag {
	case tar.TypeDir:
		err := a.root.Mkdir(name, 0o755)
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	case tar.TypeReg, tar.TypeRegA: //lint:ignore SA1019 old archives still say '\x00'
		if h.Size > maxFileSize {
			return fmt.Errorf("a file of %d GiB: more than the %d GiB one file may have", h.Size>>30, maxFileSize>>30)
		}
		f, err := a.root.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode.Perm())
		if err != nil {
			return err
		}
		return errors.Join(writeSparse(f, r), f.Close())
	case tar.TypeSymlink:
		return a.root.Symlink(h.Linkname, name)
	case tar.TypeLink:
		target, err := cleanName(h.Linkname)
		if err != nil {
			return err
		}
		return a.root.Link(target, name)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		err := a.mknod(name, h)
		if errors.Is(err, unix.EPERM) && h.Typeflag != tar.TypeFifo {
			// Device nodes take real root (root of a user namespace is
			// not enough): an unpack without it goes on without them, as
			// containerd's does, and says so once.
			if a.skippedDevice == "" {
				a.skippedDevice = name
			}
			return errSkipped
		}
		return err
	}
	return fmt.Errorf("unsupported tar entry type %q", h.Typeflag)
}

// overlayMarker writes a deletion or an opaque marker as overlayfs keeps
// them in a directory of the stack.
func (a *applier) overlayMarker(p string, opaque bool) error {
	if opaque {
		if p != "" {
			if err := a.root.MkdirAll(p, 0o755); err != nil {
				return err
			}
		}
		d, err := a.root.Open(dirOrDot(p))
		if err != nil {
			return err
		}
		defer d.Close()
		return unix.Fsetxattr(int(d.Fd()), "user.overlay.opaque", []byte("y"), 0)
	}
	dir, _ := splitName(p)
	if dir != "" {
		if err := a.root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	err := a.mknod(p, &tar.Header{Typeflag: tar.TypeChar})
	if errors.Is(err, unix.EPERM) || a.unprivileged {
		if _, serr := a.root.Lstat(p); serr != nil {
			return ErrNeedsRoot
		}
	}
	return err
}

func (a *applier) mknod(name string, h *tar.Header) error {
	dir, base := splitName(name)
	d, err := a.root.Open(dirOrDot(dir))
	if err != nil {
		return err
	}
	defer d.Close()
	mode := uint32(h.Mode & 0o7777)
	switch h.Typeflag {
	case tar.TypeChar:
		mode |= unix.S_IFCHR
	case tar.TypeBlock:
		mode |= unix.S_IFBLK
	default:
		mode |= unix.S_IFIFO
	}
	return unix.Mknodat(int(d.Fd()), base, mode, int(unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))))
}

func (a *applier) attributes(name string, h *tar.Header) error {
	if h.Typeflag == tar.TypeLink {
		return nil // a hard link shares its target's inode and attributes
	}
	if err := a.root.Lchown(name, h.Uid, h.Gid); err != nil && !a.unprivileged {
		return err
	}
	if h.Typeflag == tar.TypeSymlink {
		return a.symlinkTimes(name, h)
	}
	mode := h.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	if a.unprivileged && h.Typeflag == tar.TypeDir {
		mode |= 0o700 // without root, a read-only directory could not be filled
	}
	if err := a.root.Chmod(name, mode); err != nil {
		return err
	}
	if err := a.xattrs(name, h); err != nil {
		return err
	}
	if h.Typeflag == tar.TypeDir {
		a.dirTimes = append(a.dirTimes, dirTime{name, h.ModTime})
		return nil
	}
	return a.root.Chtimes(name, h.ModTime, h.ModTime)
}

// maxFileSize bounds one file: a few hundred bytes of sparse tar can declare
// exabytes, and the tar reader hands over every zero of the holes.
var maxFileSize int64 = 64 << 30

// writeSparse copies r to the new, empty file f, leaving a hole wherever a
// whole block is zeros: a sparse file in a layer (or a file of zeros) takes
// no more disk than it did where it was made.
func writeSparse(f *os.File, r io.Reader) error {
	const block = 64 << 10
	buf := make([]byte, block)
	var off int64
	holeAtEnd := false
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if holeAtEnd = allZero(buf[:n]); !holeAtEnd {
				if _, werr := f.WriteAt(buf[:n], off); werr != nil {
					return werr
				}
			}
			off += int64(n)
		}
		switch err {
		case nil:
			continue
		case io.EOF, io.ErrUnexpectedEOF:
			if holeAtEnd {
				return f.Truncate(off)
			}
			return nil
		}
		return err
	}
}

var zeros = make([]byte, 64<<10)

func allZero(b []byte) bool { return bytes.Equal(b, zeros[:len(b)]) }

// symlinkTimes sets a symlink's own times (os.Root has no Lchtimes).
func (a *applier) symlinkTimes(name string, h *tar.Header) error {
	dir, base := splitName(name)
	d, err := a.root.Open(dirOrDot(dir))
	if err != nil {
		return err
	}
	defer d.Close()
	ts := unix.NsecToTimespec(h.ModTime.UnixNano())
	return unix.UtimesNanoAt(int(d.Fd()), base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// applied tells which extended attributes a layer may set, as containerd
// decides: user ones, file capabilities and ACLs; never trusted.* (overlayfs
// and other kernel users read them) nor other security.* ones (SELinux,
// IMA and friends are the host's to label).
func applied(attr string) bool {
	switch {
	case strings.HasPrefix(attr, "user."), attr == "security.capability",
		attr == "system.posix_acl_access", attr == "system.posix_acl_default":
		return true
	}
	return false
}

// xattrs sets an entry's extended attributes without opening it (opening
// a fifo blocks, opening a device node acts on a device): by its name in
// its directory, reached through the directory's descriptor.
func (a *applier) xattrs(name string, h *tar.Header) error {
	var dir *os.File
	for k, v := range h.PAXRecords {
		attr, ok := strings.CutPrefix(k, paxXattr)
		if !ok || !applied(attr) {
			continue
		}
		if dir == nil {
			var err error
			parent, _ := splitName(name)
			if dir, err = a.root.Open(dirOrDot(parent)); err != nil {
				return err
			}
			defer dir.Close()
		}
		_, base := splitName(name)
		p := fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), base)
		if err := unix.Lsetxattr(p, attr, []byte(v), 0); err != nil && !a.unprivileged {
			return fmt.Errorf("setting xattr %s: %w", attr, err)
		}
	}
	return nil
}

// finish empties opaque directories of what lower layers put there and sets
// directory times last, after their contents stopped changing them.
func (a *applier) finish() error {
	if a.skippedDevice != "" {
		warnDevices.Do(func() {
			Warn(fmt.Sprintf("device nodes of the image (such as /%s) are left out: making them takes root outside any user namespace", a.skippedDevice))
		})
	}
	for _, dir := range a.opaque {
		if err := a.clearOpaque(dir); err != nil {
			return fmt.Errorf("opaque %s: %w", dir, err)
		}
	}
	for i := len(a.dirTimes) - 1; i >= 0; i-- {
		d := a.dirTimes[i]
		if fi, err := a.root.Lstat(dirOrDot(d.name)); err != nil || !fi.IsDir() {
			continue // a later entry removed it or put a link or a file in its place
		}
		if err := a.root.Chtimes(dirOrDot(d.name), d.mtime, d.mtime); err != nil {
			return fmt.Errorf("%s: %w", shortName(d.name), err)
		}
	}
	return nil
}

// dirTime is a directory's time, set once its contents stopped changing.
type dirTime struct {
	name  string // resolved: no link on the way
	mtime time.Time
}

func (a *applier) clearOpaque(dir string) error {
	if fi, err := a.root.Lstat(dirOrDot(dir)); err != nil || !fi.IsDir() {
		return nil // nothing of the lower layers there to hide
	}
	d, err := a.root.Open(dirOrDot(dir))
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		p := path.Join(dir, n)
		if !a.seen[p] {
			if err := a.root.RemoveAll(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// cleanName turns a tar entry name into a relative path inside the root, and
// refuses names that climb out of it.
func cleanName(name string) (string, error) {
	p := path.Clean(strings.TrimLeft(name, "/"))
	switch {
	case p == "..", strings.HasPrefix(p, "../"):
		return "", fmt.Errorf("path %q leaves the root", shortName(name))
	case p == ".":
		return "", nil
	}
	return p, nil
}

func dirOrDot(dir string) string {
	if dir == "" {
		return "."
	}
	return dir
}

// shortPaths cuts the long paths an error from the OS would repeat after
// the entry's name.
func shortPaths(err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe) && len(pe.Path) > 200:
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	case errors.As(err, &le) && len(le.Old)+len(le.New) > 200:
		return &os.LinkError{Op: le.Op, Old: shortName(le.Old), New: shortName(le.New), Err: le.Err}
	}
	return err
}

// shortName cuts a name for an error message: a crafted layer's names can
// be megabytes long.
func shortName(name string) string {
	const keep = 200
	if len(name) <= keep {
		return name
	}
	return fmt.Sprintf("%s... (%d bytes)", name[:keep], len(name))
}
