package layers

import (
	"archive/tar"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Lookup finds where the path p of a stack of overlay-format directories
// (bottom first, as overlayfs's lower layers: whiteouts are 0/0 character
// devices, opaque directories carry an overlay.opaque xattr) lives on the
// host, following symlinks inside the stack as overlayfs would show them.
func Lookup(dirs []string, p string) (string, error) {
	rel, err := ResolveStack(dirs, p)
	if err != nil {
		return "", err
	}
	if rel == "" {
		return dirs[len(dirs)-1], nil // the root itself
	}
	host, _, err := find(dirs, rel)
	return host, err
}

// ResolveStack follows the symlinks of every component of p in the stack,
// as overlayfs would show them, and returns the real path relative to the
// root ("" for the root itself).
func ResolveStack(dirs []string, p string) (string, error) {
	return resolveLinks(p, func(rel string) (string, bool, error) {
		host, fi, err := find(dirs, rel)
		if errors.Is(err, fs.ErrNotExist) || err == nil && fi.Mode()&fs.ModeSymlink == 0 {
			return "", false, nil
		}
		if err != nil {
			return "", false, err
		}
		target, err := os.Readlink(host)
		return target, true, err
	})
}

// StatStack describes what the stack holds at rel, its last component not
// followed, as a layer entry's header (Name rel): nil when nothing is
// there.
func StatStack(dirs []string, rel string) (*tar.Header, error) {
	host, _, err := find(dirs, rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	e, err := EntryFor(host, rel)
	if err != nil {
		return nil, err
	}
	return &e.Header, nil
}

// find returns the topmost directory's copy of rel, stopping at whiteouts
// and opaque directories.
func find(dirs []string, rel string) (string, fs.FileInfo, error) {
	for i := len(dirs) - 1; i >= 0; i-- {
		host, fi, hides, err := lookIn(dirs[i], rel)
		switch {
		case err != nil:
			return "", nil, err
		case fi != nil && isWhiteout(fi):
			return "", nil, fs.ErrNotExist
		case fi != nil:
			return host, fi, nil
		case hides:
			return "", nil, fs.ErrNotExist
		}
	}
	return "", nil, fs.ErrNotExist
}

// lookIn finds rel in one directory of a stack, a component at a time and
// following no symlink (one above rel, in a layer, is a file of its own,
// never a way out): its Lstat, or nil when it is not there. hides says
// whether something above rel in dir hides rel of the directories under
// it: a non-directory (a deletion too) or an opaque directory.
func lookIn(dir, rel string) (host string, fi fs.FileInfo, hides bool, err error) {
	parts := strings.Split(rel, "/")
	host = dir
	for i, part := range parts {
		host = filepath.Join(host, part)
		st, err := os.Lstat(host)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return "", nil, hides, nil
		case err != nil:
			return "", nil, false, err
		case i == len(parts)-1:
			return host, st, hides, nil
		case !st.IsDir():
			return "", nil, true, nil
		}
		hides = hides || isOpaque(host)
	}
	return "", nil, hides, nil
}
