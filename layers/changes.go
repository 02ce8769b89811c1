package layers

import (
	"archive/tar"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
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
	var out []Entry
	err := ChangesTo(upper, lowers, o, func(e Entry) error {
		out = append(out, e)
		return nil
	})
	return out, err
}

// ChangesTo gives yield what Changes lists, one entry at a time as it is
// found, in the order a layer has them (see SortedWriter): each
// directory's entries by name, deletions by their ".wh." names among them,
// a directory right before what is in it.
func ChangesTo(upper string, lowers []string, o ChangeOptions, yield func(Entry) error) error {
	c := &changes{upper: upper, lowers: lowers, o: o, yield: yield}
	return c.dir("", false)
}

// NewFromChanges writes the changes in upper (as ChangesTo gives them) as a
// layer (see New and SortedWriter) while it reads them: the changes are
// found, the small files among them read, and the layer written, on three
// goroutines; nil when there are none.
func NewFromChanges(upper string, lowers []string, co ChangeOptions, epoch *time.Time, o Options) (v1.Layer, error) {
	found, filled, read, stop := make(chan Entry, 256), make(chan Entry, 256), make(chan error, 1), make(chan struct{})
	go func() {
		defer close(found)
		read <- ChangesTo(upper, lowers, co, func(e Entry) error {
			select {
			case found <- e:
				return nil
			case <-stop:
				return errStopped
			}
		})
	}()
	go func() {
		defer close(filled)
		var src sources
		defer src.close()
		for e := range found {
			src.fill(&e)
			select {
			case filled <- e:
			case <-stop:
				for range found { // until the finder sees stop too
				}
				return
			}
		}
	}()
	defer func() {
		close(stop)
		for range filled { // the reader gives up, if it has not ended
		}
	}()
	first, ok := <-filled
	if !ok {
		return nil, <-read // nil, nil: no changes
	}
	l, err := New(func(tw *tar.Writer) error {
		w := NewSortedWriter(tw, epoch)
		defer w.Close()
		for e, ok := first, true; ok; e, ok = <-filled {
			if err := w.Add(e); err != nil {
				return err
			}
		}
		return nil
	}, o)
	if err != nil {
		return nil, err
	}
	if err := <-read; err != nil { // it has ended: every entry it gave was taken
		return nil, err
	}
	return l, nil
}

var errStopped = errors.New("stopped")

type changes struct {
	upper  string
	lowers []string
	o      ChangeOptions
	yield  func(Entry) error
	// pending are the directories on the way to where dir looks, not
	// given yet: each is, just before the first entry found below it.
	pending []Entry
}

// give gives e, after the directories it is in.
func (c *changes) give(e Entry) error {
	for _, d := range c.pending {
		if err := c.yield(d); err != nil {
			return err
		}
	}
	c.pending = c.pending[:0]
	return c.yield(e)
}

// item is one name in an upper directory, under the name its entry takes:
// an upper file (de), or a deletion of what the lower layers show there
// (below).
type item struct {
	name  string
	de    fs.DirEntry
	fi    fs.FileInfo // de's, when known
	below fs.FileInfo
}

// dir gives the changes under rel; hidden: an opaque directory above hides
// the lower layers there, so that nothing in it is merely copied up.
func (c *changes) dir(rel string, hidden bool) error {
	des, err := os.ReadDir(filepath.Join(c.upper, rel))
	if err != nil {
		return err
	}
	items := make([]item, 0, len(des))
	sorted := true
	for _, de := range des {
		it := item{name: de.Name(), de: de}
		if de.Type()&fs.ModeCharDevice != 0 {
			if it.fi, err = os.Lstat(filepath.Join(c.upper, rel, de.Name())); err != nil {
				return err
			}
			if isWhiteout(it.fi) {
				it.name, sorted = whPrefix+de.Name(), false
			}
		}
		items = append(items, it)
	}
	if hidden {
		gone, err := c.deletedBelow(rel, des)
		if err != nil {
			return err
		}
		for _, fi := range gone {
			items = append(items, item{name: whPrefix + fi.Name(), below: fi})
		}
		sorted = sorted && len(gone) == 0
	}
	if !sorted {
		slices.SortFunc(items, func(a, b item) int { return strings.Compare(a.name, b.name) })
	}
	for _, it := range items {
		p := path.Join(rel, it.name)
		if it.below != nil {
			if err := c.give(whiteout(p, it.below)); err != nil {
				return err
			}
			continue
		}
		host := filepath.Join(c.upper, rel, it.de.Name())
		fi := it.fi
		if fi == nil {
			if fi, err = os.Lstat(host); err != nil {
				return err
			}
		}
		if isWhiteout(fi) {
			if err := c.give(whiteout(p, fi)); err != nil {
				return err
			}
			continue
		}
		e, err := entryOf(host, p, fi)
		if err != nil {
			return err
		}
		e = c.mapIDs(e)
		if !fi.IsDir() {
			if err := c.give(e); err != nil {
				return err
			}
			continue
		}
		at := len(c.pending)
		c.pending = append(c.pending, e)
		opaque := isOpaque(host)
		if err := c.dir(p, hidden || opaque); err != nil {
			return err
		}
		if len(c.pending) > at { // nothing below it was given
			c.pending = c.pending[:at]
			if opaque || hidden || c.dirChanged(p, fi) {
				if err := c.give(e); err != nil {
					return err
				}
			} // else it was only copied up: not a change
		}
	}
	return nil
}

// deletedBelow lists what the lower layers show in the directory rel that
// upper, whose entries there are des, hides: rel is in a directory that
// the step removed and made again.
func (c *changes) deletedBelow(rel string, des []fs.DirEntry) ([]fs.FileInfo, error) {
	made := map[string]bool{}
	for _, de := range des {
		made[de.Name()] = true
	}
	var gone []fs.FileInfo
	for i := len(c.lowers) - 1; i >= 0; i-- {
		host, fi, hides, err := lookIn(c.lowers[i], rel)
		switch {
		case err != nil:
			return nil, err
		case fi != nil && !fi.IsDir():
			return gone, nil // a file or a deletion here: nothing below shows
		case fi != nil:
			lower, err := os.ReadDir(host)
			if err != nil {
				return nil, err
			}
			for _, de := range lower {
				if made[de.Name()] {
					continue
				}
				made[de.Name()] = true
				if info, err := de.Info(); err == nil && !isWhiteout(info) {
					gone = append(gone, info)
				}
			}
			hides = hides || isOpaque(host)
		}
		if hides {
			break
		}
	}
	return gone, nil
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
