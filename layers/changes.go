package layers

import (
	"archive/tar"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ChangeOptions tune how a step's changes become layer entries.
type ChangeOptions struct {
	// IDs maps the owners found on disk back to the image's; nil keeps them.
	IDs func(uid, gid int) (int, int)
}

// Changes lists what a step changed, from its overlayfs upper directory:
// a 0/0 character device is a deletion and becomes a ".wh." entry; in an
// opaque directory (one the step removed and made again) each name that
// the lower layers show there and the step did not make again becomes a
// ".wh." entry too, as BuildKit's layers list it, rather than one opaque
// marker; overlay xattrs are dropped. A directory that was only copied up, unchanged, is left out.
// The cost follows the size of upper, not of the root filesystem.
func Changes(upper string, lowers []string, o ChangeOptions) ([]Entry, error) {
	c := &changes{upper: upper, lowers: lowers, o: o}
	err := c.dir("", false)
	return c.out, err
}

type changes struct {
	upper  string
	lowers []string
	o      ChangeOptions
	out    []Entry // in the order found: a directory before what is in it
}

// dir lists the changes under rel; hidden: an opaque directory above hides
// the lower layers there, so that nothing in it is merely copied up.
func (c *changes) dir(rel string, hidden bool) error {
	des, err := os.ReadDir(filepath.Join(c.upper, rel))
	if err != nil {
		return err
	}
	if hidden {
		if err := c.deletedBelow(rel, des); err != nil {
			return err
		}
	}
	for _, de := range des {
		p := path.Join(rel, de.Name())
		host := filepath.Join(c.upper, p)
		fi, err := os.Lstat(host)
		if err != nil {
			return err
		}
		if isWhiteout(fi) {
			c.out = append(c.out, whiteout(path.Join(rel, whPrefix+de.Name()), fi))
			continue
		}
		e, err := entryOf(host, p, fi)
		if err != nil {
			return err
		}
		c.out = append(c.out, c.mapIDs(e))
		if !fi.IsDir() {
			continue
		}
		at := len(c.out)
		opaque := isOpaque(host)
		if err := c.dir(p, hidden || opaque); err != nil {
			return err
		}
		if len(c.out) == at && !opaque && !hidden && !c.dirChanged(p, fi) {
			c.out = c.out[:at-1] // only copied up: not a change
		}
	}
	return nil
}

// deletedBelow lists, as deletions, what the lower layers show in the
// directory rel that upper, whose entries there are des, hides: rel is in a
// directory that the step removed and made again.
func (c *changes) deletedBelow(rel string, des []fs.DirEntry) error {
	made := map[string]bool{}
	for _, de := range des {
		made[de.Name()] = true
	}
	for i := len(c.lowers) - 1; i >= 0; i-- {
		host, fi, hides, err := lookIn(c.lowers[i], rel)
		switch {
		case err != nil:
			return err
		case fi != nil && !fi.IsDir():
			return nil // a file or a deletion here: nothing below shows
		case fi != nil:
			lower, err := os.ReadDir(host)
			if err != nil {
				return err
			}
			for _, de := range lower {
				if made[de.Name()] {
					continue
				}
				made[de.Name()] = true
				if info, err := de.Info(); err == nil && !isWhiteout(info) {
					c.out = append(c.out, whiteout(path.Join(rel, whPrefix+de.Name()), info))
				}
			}
			hides = hides || isOpaque(host)
		}
		if hides {
			break
		}
	}
	return nil
}

// dirChanged tells whether a directory of upper is new or differs from the
// lower one in type, mode or owner (not in times: a copy-up touches them).
func (c *changes) dirChanged(p string, fi fs.FileInfo) bool {
	_, lfi, err := find(c.lowers, p)
	return err != nil || !lfi.IsDir() || !sameMeta(fi, lfi)
}

func (c *changes) mapIDs(e Entry) Entry {
	if c.o.IDs != nil {
		e.Uid, e.Gid = c.o.IDs(e.Uid, e.Gid)
	}
	return e
}

func sameMeta(a, b fs.FileInfo) bool {
	sa, oka := a.Sys().(*syscall.Stat_t)
	sb, okb := b.Sys().(*syscall.Stat_t)
	return a.Mode() == b.Mode() && oka && okb && sa.Uid == sb.Uid && sa.Gid == sb.Gid
}

// isWhiteout tells whether fi is overlayfs's deletion mark: a 0/0 char device.
func isWhiteout(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && fi.Mode()&fs.ModeCharDevice != 0 && st.Rdev == 0
}

// isOpaque tells whether an upper directory hides the lower ones' contents.
func isOpaque(p string) bool {
	buf := make([]byte, 8)
	for _, attr := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		n, err := unix.Lgetxattr(p, attr, buf)
		if err == nil && bytes.Equal(buf[:n], []byte("y")) {
			return true
		}
	}
	return false
}

func whiteout(name string, fi fs.FileInfo) Entry {
	return Entry{Header: tar.Header{Name: name, Typeflag: tar.TypeReg, ModTime: fi.ModTime()}}
}

// Diff lists the changes from the tree old to the tree new by walking and
// comparing both: the fallback where overlayfs cannot be mounted. A file
// counts as changed when its type, mode, owner, size, mtime or link differ.
func Diff(old, new string) ([]Entry, error) {
	return diffDir(old, new, "")
}

func diffDir(old, new, rel string) ([]Entry, error) {
	des, err := os.ReadDir(filepath.Join(new, rel))
	if err != nil {
		return nil, err
	}
	var out []Entry
	seen := map[string]bool{}
	for _, de := range des {
		p := path.Join(rel, de.Name())
		seen[de.Name()] = true
		nfi, err := os.Lstat(filepath.Join(new, p))
		if err != nil {
			return nil, err
		}
		ofi, oerr := os.Lstat(filepath.Join(old, p))
		if oerr != nil && !errors.Is(oerr, fs.ErrNotExist) {
			return nil, oerr
		}
		var sub []Entry
		if nfi.IsDir() {
			if oerr == nil && !ofi.IsDir() {
				// A directory replaces a file: everything below it is new.
				sub, err = fromDir(filepath.Join(new, p), p)
			} else {
				sub, err = diffDir(old, new, p)
			}
			if err != nil {
				return nil, err
			}
			if oerr == nil && ofi.IsDir() && len(sub) == 0 && sameMeta(nfi, ofi) {
				continue
			}
		} else if oerr == nil && sameFile(filepath.Join(old, p), filepath.Join(new, p), ofi, nfi) {
			continue
		}
		e, err := EntryFor(filepath.Join(new, p), p)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
		out = append(out, sub...)
	}
	gone, err := os.ReadDir(filepath.Join(old, rel))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, de := range gone {
		if !seen[de.Name()] {
			fi, _ := de.Info()
			out = append(out, Entry{Header: tar.Header{Name: path.Join(rel, whPrefix+de.Name()), Typeflag: tar.TypeReg, ModTime: modTime(fi)}})
		}
	}
	return out, nil
}

func sameFile(oldPath, newPath string, a, b fs.FileInfo) bool {
	if !sameMeta(a, b) || a.Size() != b.Size() || !a.ModTime().Equal(b.ModTime()) {
		return false
	}
	if a.Mode()&fs.ModeSymlink != 0 {
		la, _ := os.Readlink(oldPath)
		lb, _ := os.Readlink(newPath)
		return la == lb
	}
	return true
}

func modTime(fi fs.FileInfo) (t time.Time) {
	if fi != nil {
		return fi.ModTime()
	}
	return t
}
