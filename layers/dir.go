package layers

import (
	"archive/tar"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// keptXattrs are the extended attributes a layer carries.
var keptXattrs = []string{"security.capability"}

// fromDir lists the tree at root as layer entries named below prefix
// (prefix "" puts root's contents at the top of the layer). root itself is
// not an entry.
func fromDir(root, prefix string) ([]Entry, error) {
	var entries []Entry
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		e, err := EntryFor(p, filepath.ToSlash(filepath.Join(prefix, rel)))
		if err != nil {
			return err
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", root, err)
	}
	return entries, nil
}

// EntryFor describes the host file p (not following a final symlink) as a
// layer entry called name.
func EntryFor(p, name string) (Entry, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return Entry{}, err
	}
	return entryOf(p, name, fi)
}

// entryOf is EntryFor with p's Lstat at hand.
func entryOf(p, name string, fi fs.FileInfo) (Entry, error) {
	link := ""
	var err error
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			return Entry{}, err
		}
	}
	h, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return Entry{}, fmt.Errorf("%s: %w", p, err)
	}
	h.Name = name // FileInfoHeader took the owner (Uid, Gid) from fi.Sys()
	e := Entry{Header: *h}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Nlink > 1 {
		e.Inode = fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	}
	if fi.Mode().IsRegular() {
		e.Source = p // with its extended attributes, read when it is written
	}
	return e, nil
}

// withXattrs adds to recs, as PAX records, the kept extended attributes of
// the open file fd that recs lacks. Only a regular file has any: the kernel
// takes security.capability on nothing else.
func withXattrs(fd int, recs map[string]string) map[string]string {
	var buf [256]byte
	for _, name := range keptXattrs {
		if _, ok := recs[paxXattr+name]; ok {
			continue
		}
		n, err := unix.Fgetxattr(fd, name, buf[:])
		if err != nil || n <= 0 {
			continue
		}
		if recs == nil {
			recs = map[string]string{}
		}
		recs[paxXattr+name] = string(buf[:n])
	}
	return recs
}

// splitName splits a layer path into its directory and base name.
func splitName(name string) (string, string) {
	name = strings.TrimSuffix(name, "/")
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return "", name
	}
	return name[:i], name[i+1:]
}
