package layers

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Entry is one member of a layer: a tar header and where its contents come
// from when it is a regular file.
type Entry struct {
	tar.Header
	Source string // host file holding the contents; empty means Data
	Data   []byte
	// Inode groups hardlinked files: entries with the same non-empty Inode
	// become one file and hardlinks to it.
	Inode string
}

// Write writes entries as a deterministic tar stream: one entry per path
// (the last given), every parent directory listed (one that entries do
// not give is 0755 and root's, as an archive's extraction makes it),
// sorted by path (parents before children), owner names dropped, times cut to whole seconds and
// clamped to epoch when it is not nil, hardlinks pointing at the first name
// of their file.
func Write(tw *tar.Writer, entries []Entry, epoch *time.Time) error {
	sorted := withParents(lastOfEach(entries))
	for i := range sorted {
		normalize(&sorted[i].Header, epoch)
	}
	slices.SortStableFunc(sorted, func(a, b Entry) int { return comparePaths(a.Name, b.Name) })
	w := NewSortedWriter(tw, epoch)
	defer w.Close()
	for _, e := range sorted {
		if err := w.write(e); err != nil {
			return err
		}
	}
	return nil
}

// A SortedWriter writes entries as Write does, one at a time, for entries
// that come in Write's order already, each path once and after its parent
// directory: as ChangesTo gives a step's changes, which are then written
// while they are found.
type SortedWriter struct {
	tw    *tar.Writer
	epoch *time.Time
	first map[string]string // the first name written of each hardlinked file
	src   sources
}

// NewSortedWriter writes to tw, clamping times to epoch when it is not
// nil. Close it once the entries are written.
func NewSortedWriter(tw *tar.Writer, epoch *time.Time) *SortedWriter {
	return &SortedWriter{tw: tw, epoch: epoch, first: map[string]string{}}
}

// Add writes e.
func (w *SortedWriter) Add(e Entry) error {
	normalize(&e.Header, w.epoch)
	return w.write(e)
}

// write writes e, normalized already.
func (w *SortedWriter) write(e Entry) error {
	if e.Typeflag == tar.TypeReg && e.Inode != "" {
		if target, ok := w.first[e.Inode]; ok {
			e.Typeflag, e.Linkname, e.Size = tar.TypeLink, target, 0
		} else {
			w.first[e.Inode] = e.Name
		}
	}
	if err := w.src.writeEntry(w.tw, e); err != nil {
		return fmt.Errorf("writing %s: %w", e.Name, err)
	}
	return nil
}

// Close lets go of the directory whose files it was writing.
func (w *SortedWriter) Close() { w.src.close() }

// lastOfEach keeps one entry per path, the last given: two sources of a
// COPY that land on one path leave the second, as in BuildKit (readers
// disagree on which of two entries wins).
func lastOfEach(entries []Entry) []Entry {
	last := map[string]int{}
	for i, e := range entries {
		last[strings.TrimSuffix(path.Clean("/"+e.Name), "/")] = i
	}
	out := make([]Entry, 0, len(last))
	for i, e := range entries {
		if last[strings.TrimSuffix(path.Clean("/"+e.Name), "/")] == i {
			out = append(out, e)
		}
	}
	return out
}

// withParents adds an entry for each parent directory that entries imply
// but do not list.
func withParents(entries []Entry) []Entry {
	listed := map[string]bool{}
	for _, e := range entries {
		listed[strings.Trim(path.Clean("/"+e.Name), "/")] = true
	}
	for _, e := range entries {
		for dir := path.Dir(strings.Trim(path.Clean("/"+e.Name), "/")); dir != "." && !listed[dir]; dir = path.Dir(dir) {
			listed[dir] = true
			entries = append(entries, Entry{Header: tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}})
		}
	}
	return entries
}

// copyBufs are the buffers file contents go through into a layer.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// sources opens the host files whose contents go into a layer, each from
// its directory, held open while the files in it come (they come sorted by
// path): a lookup of one name instead of a whole path per file.
type sources struct {
	dir string
	fd  int
}

func (s *sources) open(p string) (int, error) {
	dir, name := filepath.Split(p)
	if s.dir != dir || s.fd <= 0 {
		s.close()
		fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		s.dir, s.fd = dir, fd
	}
	return unix.Openat(s.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

func (s *sources) close() {
	if s.fd > 0 {
		unix.Close(s.fd)
	}
	s.dir, s.fd = "", 0
}

// filledBelow is the size up to which fill reads a file ahead of the tar
// stream.
const filledBelow = 16 << 10

// fill reads a small regular file's contents and extended attributes into
// e, where the tar stream will take them from memory. Any failure leaves e
// as it was: writeEntry reads the file then, and says what went wrong. A
// file with more than one link is left to writeEntry too: all but the
// first of its names become links, without contents.
func (s *sources) fill(e *Entry) {
	if e.Typeflag != tar.TypeReg || e.Source == "" || e.Size > filledBelow || e.Inode != "" {
		return
	}
	fd, err := s.open(e.Source)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	data := make([]byte, e.Size)
	if readFull(fd, data) != nil {
		return
	}
	e.PAXRecords = withXattrs(fd, e.PAXRecords)
	e.Data, e.Source = data, ""
}

// errShrunk is a file that ended before the size it was listed with.
var errShrunk = errors.New("file changed size while being read")

// readFull fills b from fd.
func readFull(fd int, b []byte) error {
	for got := 0; got < len(b); {
		n, err := unix.Read(fd, b[got:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		case n == 0:
			return errShrunk
		}
		got += n
	}
	return nil
}

func (s *sources) writeEntry(tw *tar.Writer, e Entry) error {
	fd := -1
	if e.Source != "" {
		// A file on disk, or another name of one written already (a link):
		// its extended attributes go on either, as in BuildKit's layers
		// (containerd's), read from the open file. Straight system calls:
		// an *os.File would add a poller registration, a stat and a last
		// read for each of thousands of small files.
		var err error
		if fd, err = s.open(e.Source); err != nil {
			return &fs.PathError{Op: "open", Path: e.Source, Err: err}
		}
		defer unix.Close(fd)
		e.PAXRecords = withXattrs(fd, e.PAXRecords)
	}
	if e.Typeflag != tar.TypeReg {
		e.Size = 0
		return tw.WriteHeader(&e.Header)
	}
	if fd < 0 {
		e.Size = int64(len(e.Data))
		if err := tw.WriteHeader(&e.Header); err != nil {
			return err
		}
		_, err := tw.Write(e.Data)
		return err
	}
	// The size is the entry's, from when the file was listed.
	if err := tw.WriteHeader(&e.Header); err != nil {
		return err
	}
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	for left := e.Size; left > 0; {
		b := (*buf)[:min(int64(len(*buf)), left)]
		switch err := readFull(fd, b); {
		case err == errShrunk:
			return fmt.Errorf("%s: %w", e.Source, err)
		case err != nil:
			return &fs.PathError{Op: "read", Path: e.Source, Err: err}
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
		left -= int64(len(b))
	}
	return nil
}

func normalize(h *tar.Header, epoch *time.Time) {
	name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
	if h.Typeflag == tar.TypeDir && name != "" {
		name += "/"
	}
	h.Name = name
	h.Uname, h.Gname = "", ""
	h.ModTime = h.ModTime.Truncate(time.Second)
	if epoch != nil && h.ModTime.After(*epoch) {
		h.ModTime = *epoch
	}
	h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
	h.Format = tar.FormatUnknown
	if len(h.PAXRecords) == 0 {
		h.PAXRecords = nil
	}
	//lint:ignore SA1019 headers read from archives carry xattrs twice; PAXRecords is the one kept.
	h.Xattrs = nil
}

// comparePaths orders paths so that a directory comes right before its
// contents ('/' sorts before every other byte), led by its opaque marker.
func comparePaths(a, b string) int {
	a, b = strings.TrimSuffix(a, "/"), strings.TrimSuffix(b, "/")
	return bytes.Compare(pathKey(a), pathKey(b))
}

func pathKey(p string) []byte {
	if dir, ok := strings.CutSuffix(p, whOpaque); ok && (dir == "" || strings.HasSuffix(dir, "/")) {
		p = dir + "\x01" // an opaque marker leads its directory's entries
	}
	k := []byte(p)
	for i, c := range k {
		if c == '/' {
			k[i] = 0
		}
	}
	return k
}

// Xattr prefix used in PAX records, as GNU tar and Docker write them.
const paxXattr = "SCHILY.xattr."
