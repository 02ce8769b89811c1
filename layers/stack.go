package layers

import (
	"archive/tar"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
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
		host := filepath.Join(dirs[i], rel)
		fi, err := os.Lstat(host)
		switch {
		case err == nil && isWhiteout(fi):
			return "", nil, fs.ErrNotExist
		case err == nil:
			return host, fi, nil
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
			return "", nil, err
		}
		if hiddenBelow(dirs[i], rel) {
			break
		}
	}
	return "", nil, fs.ErrNotExist
}

// hiddenBelow tells whether dir hides rel of the directories under it: an
// ancestor of rel is opaque or a whiteout there.
func hiddenBelow(dir, rel string) bool {
	for d := path.Dir(rel); d != "." && d != "/"; d = path.Dir(d) {
		fi, err := os.Lstat(filepath.Join(dir, d))
		if err != nil {
			continue
		}
		if isWhiteout(fi) || (fi.IsDir() && isOpaque(filepath.Join(dir, d))) {
			return true
		}
	}
	return false
}
