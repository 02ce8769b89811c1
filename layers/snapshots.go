package layers

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Snapshots: the top layer of a stack, alone, in overlayfs's format (a
// deletion a 0/0 character device, an opaque directory marked by xattr), in
// a folder "diff-<chain ID>" of the cache: a lower directory to lay on the
// folders of the layers below it. A step's upper directory is one as it
// is, so a step's changes are kept instead of deleted, and a later build
// that needs those files does not unpack them again. Past Max bytes the
// least recently used go.

const diffPrefix = "diff-"

// Diff returns the snapshot of the top layer of ls, unpacking it the first
// time on below, the directories of the layers under it. Without root, a layer that deletes files cannot be a snapshot:
// ErrNeedsRoot.
func (c *Cache) Diff(ctx context.Context, ls []v1.Layer, below []string) (string, error) {
	dir, unlock, err := c.diffDir(ls)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(dir); err == nil {
		touch(dir)
		return dir, nil
	}
	tmp, err := os.MkdirTemp(c.Dir, "unpack-")
	if err != nil {
		return "", err
	}
	if err := UnpackDiff(ctx, tmp, ls[len(ls)-1], below); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	return c.place(tmp, dir)
}

// Keep makes dir, the top layer of ls in overlayfs's format (a step's upper
// directory), its snapshot, moving it into the cache, and returns where it
// is now. When the cache has that snapshot already, dir is removed.
func (c *Cache) Keep(ls []v1.Layer, dir string) (string, error) {
	final, unlock, err := c.diffDir(ls)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(final); err == nil {
		os.RemoveAll(dir)
		return final, nil
	}
	return c.place(dir, final)
}

func (c *Cache) diffDir(ls []v1.Layer) (string, func(), error) {
	chain, err := chainID(ls)
	if err != nil {
		return "", nil, err
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return "", nil, err
	}
	lock := c.lock(chain)
	lock.Lock()
	return filepath.Join(c.Dir, diffPrefix+chain.Encoded()), lock.Unlock, nil
}

// place renames a finished snapshot into place, notes its size, and trims
// the snapshots to Max.
func (c *Cache) place(tmp, dir string) (string, error) {
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Stat(dir); serr == nil {
			return dir, nil // another process made it first
		}
		return "", err
	}
	os.WriteFile(dir+".size", []byte(strconv.FormatInt(treeSize(dir), 10)), 0o644)
	if c.Max > 0 {
		c.trim(c.Max, dir)
	}
	return dir, nil
}

// treeSize is about what a tree takes on disk: its files' sizes, and a
// block for each entry.
func treeSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil {
			if fi, err := d.Info(); err == nil {
				n += fi.Size() + 4096
			}
		}
		return nil
	})
	return n
}

type snapshot struct {
	dir  string
	size int64
	used time.Time
}

// trim removes the least recently used snapshots while they take more than
// max bytes, sparing keep.
func (c *Cache) trim(max int64, keep string) {
	sizes, _ := filepath.Glob(filepath.Join(c.Dir, diffPrefix+"*.size"))
	var snaps []snapshot
	var total int64
	for _, s := range sizes {
		data, err := os.ReadFile(s)
		n, perr := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		fi, serr := os.Stat(strings.TrimSuffix(s, ".size"))
		if err != nil || perr != nil || serr != nil {
			continue
		}
		snaps = append(snaps, snapshot{strings.TrimSuffix(s, ".size"), n, fi.ModTime()})
		total += n
	}
	slices.SortFunc(snaps, func(a, b snapshot) int { return a.used.Compare(b.used) })
	for _, s := range snaps {
		if total <= max {
			return
		}
		if s.dir == keep {
			continue
		}
		if err := os.RemoveAll(s.dir); err == nil || errors.Is(err, fs.ErrNotExist) {
			os.Remove(s.dir + ".size")
			total -= s.size
		}
	}
}

func touch(p string) {
	now := time.Now()
	os.Chtimes(p, now, now)
}
