package layers

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/gob"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Catalog remembers which paths the layers it has read hold, so that path
// lookups over many steps and platforms read each layer at most once, and
// only the layers they need.
type Catalog struct {
	// Dir, when set, keeps each layer's listing on disk (headers only, a
	// file per layer digest), so that later builds on the machine read no
	// layer again to look a path up.
	Dir string

	mu       sync.Mutex
	listings map[v1.Hash]*listing
}

// listing is what one layer holds: its entries' headers and what it hides
// of the layers below.
type listing struct {
	once    sync.Once
	entries map[string]*tar.Header // with the directories they imply
	kept    map[string][]byte      // the contents of keptFiles it holds
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
	h, _, err := c.find(ctx, ls, name)
	return h, err
}

// find looks the clean name up from the top layer down: its header and the
// listing of the layer that holds it, or nil when nothing is there.
func (c *Catalog) find(ctx context.Context, ls []v1.Layer, name string) (*tar.Header, *listing, error) {
	for i := len(ls) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		lst, err := c.listing(ls[i])
		if err != nil {
			return nil, nil, fmt.Errorf("reading layer %d: %w", i+1, err)
		}
		if h, ok := lst.entries[name]; ok {
			return h, lst, nil
		}
		if lst.hides(name) {
			return nil, nil, nil
		}
	}
	return nil, nil, nil
}

// Resolve follows the symlinks of every component of name in the image
// whose layers are ls, and returns the real path, relative to the root
// ("" for the root itself); components that do not exist are taken as
// they are.
func (c *Catalog) Resolve(ctx context.Context, ls []v1.Layer, name string) (string, error) {
	return resolveLinks(name, func(rel string) (string, bool, error) {
		h, err := c.Stat(ctx, ls, rel)
		if err != nil || h == nil || h.Typeflag != tar.TypeSymlink {
			return "", false, err
		}
		return h.Linkname, true, nil
	})
}

// keptFiles are the files whose bytes a listing keeps, for ReadFiles: the
// user database that USER, WORKDIR and --chown look names up in.
var keptFiles = map[string]bool{"etc/passwd": true, "etc/group": true}

// maxKept bounds the bytes a listing keeps of one file.
const maxKept = 4 << 20

// ReadFiles is layers.ReadFiles through the catalog: each layer is read at
// most once for every lookup and platform that shares it. names outside
// keptFiles are read from the layers directly.
func (c *Catalog) ReadFiles(ctx context.Context, ls []v1.Layer, names ...string) (map[string][]byte, error) {
	for _, n := range names {
		if !keptFiles[n] {
			return ReadFiles(ctx, ls, names...)
		}
	}
	out := map[string][]byte{}
	for _, n := range names {
		h, lst, err := c.find(ctx, ls, n)
		if err != nil {
			return nil, err
		}
		if h == nil || h.Typeflag != tar.TypeReg {
			continue
		}
		if data, ok := lst.kept[n]; ok {
			out[n] = data
		}
	}
	return out, nil
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
	lst.once.Do(func() {
		file := ""
		if c.Dir != "" {
			file = filepath.Join(c.Dir, "listing-"+d.Hex)
			if lst.load(file) == nil {
				return
			}
		}
		if lst.err = lst.read(l); lst.err == nil && file != "" {
			lst.save(file) // a listing not kept is read again next time
		}
	})
	return lst, lst.err
}

// storedListing is a listing as a file keeps it.
type storedListing struct {
	Entries      []*tar.Header
	Gone, Opaque []string
	Kept         map[string][]byte
}

func (lst *listing) load(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	var st storedListing
	if err := gob.NewDecoder(bufio.NewReader(f)).Decode(&st); err != nil {
		return err
	}
	lst.entries = make(map[string]*tar.Header, len(st.Entries))
	for _, h := range st.Entries {
		lst.entries[h.Name] = h
	}
	lst.gone, lst.opaque, lst.kept = st.Gone, st.Opaque, st.Kept
	return nil
}

func (lst *listing) save(file string) error {
	st := storedListing{Gone: lst.gone, Opaque: lst.opaque, Kept: lst.kept}
	for _, h := range lst.entries {
		st.Entries = append(st.Entries, h)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "listing-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriter(tmp)
	if err := gob.NewEncoder(w).Encode(&st); err != nil {
		tmp.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
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
		if keptFiles[n] && h.Typeflag == tar.TypeReg && h.Size <= maxKept {
			data, err := io.ReadAll(tr)
			if err != nil {
				return err
			}
			if lst.kept == nil {
				lst.kept = map[string][]byte{}
			}
			lst.kept[n] = data
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
