package layers

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"path"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Catalog remembers which paths the layers it has read hold, so that path
// lookups over many steps and platforms read each layer at most once, and
// only the layers they need.
type Catalog struct {
	mu       sync.Mutex
	listings map[v1.Hash]*listing
}

// listing is what one layer holds: its entries' headers and what it hides
// of the layers below.
type listing struct {
	once    sync.Once
	entries map[string]*tar.Header // with the directories they imply
	deletions
	err error
}

// Stat tells what the image whose layers are ls (bottom first) holds at
// name: the entry's header (Name cleaned), or nil when nothing is there.
// Layers are read from the top down only until one settles the question,
// so a path that no layer has costs every layer once.
func (c *Catalog) Stat(ctx context.Context, ls []v1.Layer, name string) (*tar.Header, error) {
	name, err := cleanName(name)
	if err != nil {
		return nil, err
	}
	for i := len(ls) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		lst, err := c.listing(ls[i])
		if err != nil {
			return nil, fmt.Errorf("reading layer %d: %w", i+1, err)
		}
		if h, ok := lst.entries[name]; ok {
			return h, nil
		}
		if lst.hides(name) {
			return nil, nil
		}
	}
	return nil, nil
}

// StatFollow is Stat after following the symlinks of every component of
// name, as the image's file system would show it.
func (c *Catalog) StatFollow(ctx context.Context, ls []v1.Layer, name string) (*tar.Header, error) {
	rel, err := resolveLinks(name, func(rel string) (string, bool, error) {
		h, err := c.Stat(ctx, ls, rel)
		if err != nil || h == nil || h.Typeflag != tar.TypeSymlink {
			return "", false, err
		}
		return h.Linkname, true, nil
	})
	if err != nil {
		return nil, err
	}
	if rel == "" {
		return &tar.Header{Typeflag: tar.TypeDir, Mode: 0o755}, nil // the root
	}
	return c.Stat(ctx, ls, rel)
}

func (c *Catalog) listing(l v1.Layer) (*listing, error) {
	d, err := l.Digest()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.listings == nil {
		c.listings = map[v1.Hash]*listing{}
	}
	lst := c.listings[d]
	if lst == nil {
		lst = &listing{}
		c.listings[d] = lst
	}
	c.mu.Unlock()
	lst.once.Do(func() { lst.err = lst.read(l) })
	return lst, lst.err
}

func (lst *listing) read(l v1.Layer) error {
	lst.entries = map[string]*tar.Header{}
	return readLayer(l, lst.add)
}

func (lst *listing) add(tr *tar.Reader) error {
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		n, err := cleanName(h.Name)
		if err != nil {
			return err
		}
		if !lst.note(n) {
			h.Name = n
			lst.entries[n] = h
			lst.imply(path.Dir(n))
		}
	}
}

// imply records that directory dir and its parents exist in this layer,
// where the layer holds no entry of their own.
func (lst *listing) imply(dir string) {
	for ; dir != "." && lst.entries[dir] == nil; dir = path.Dir(dir) {
		lst.entries[dir] = &tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755}
	}
}
