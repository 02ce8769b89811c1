package layers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
)

// Cache keeps unpacked layer stacks in a directory, one folder per chain ID,
// so that a stack is extracted once. Folders in it are never changed after
// they are made: users lay an overlay on top.
type Cache struct {
	Dir string
	Max int64 // bytes of snapshots kept (see Diff); 0: no bound

	mu    sync.Mutex
	locks map[digest.Digest]*sync.Mutex
}

// chainID is the OCI chain ID of a stack of layers, bottom first.
func chainID(ls []v1.Layer) (digest.Digest, error) {
	var chain digest.Digest
	for _, l := range ls {
		d, err := l.DiffID()
		if err != nil {
			return "", err
		}
		if chain == "" {
			chain = digest.Digest(d.String())
			continue
		}
		chain = digest.FromString(chain.String() + " " + d.String())
	}
	return chain, nil
}

// Rootfs returns a directory holding ls unpacked, extracting them the first
// time they are asked for.
func (c *Cache) Rootfs(ctx context.Context, ls []v1.Layer) (string, error) {
	chain, err := chainID(ls)
	if err != nil {
		return "", err
	}
	if chain == "" {
		chain = digest.FromString("") // the empty filesystem
	}
	lock := c.lock(chain)
	lock.Lock()
	defer lock.Unlock()
	dir := filepath.Join(c.Dir, chain.Encoded())
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(c.Dir, "unpack-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := Unpack(ctx, tmp, ls); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Stat(dir); serr == nil {
			return dir, nil // another process made it first
		}
		return "", fmt.Errorf("storing rootfs: %w", err)
	}
	return dir, nil
}

func (c *Cache) lock(d digest.Digest) *sync.Mutex {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.locks == nil {
		c.locks = map[digest.Digest]*sync.Mutex{}
	}
	if c.locks[d] == nil {
		c.locks[d] = &sync.Mutex{}
	}
	return c.locks[d]
}
