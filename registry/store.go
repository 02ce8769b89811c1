package registry

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
)

// refNameAnnotation names an image in an OCI layout's index.json.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// Store is manifold's local image store: an OCI image layout whose
// index.json names each image by its full reference.
type Store struct {
	Dir string
}

// DefaultStoreDir is $MANIFOLD_STORE, else $XDG_DATA_HOME/manifold/store,
// else ~/.local/share/manifold/store.
func DefaultStoreDir() string {
	if d := os.Getenv("MANIFOLD_STORE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "manifold", "store")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.TempDir()
	}
	return filepath.Join(home, ".local", "share", "manifold", "store")
}

func (s *Store) path() (layout.Path, error) {
	p, err := layout.FromPath(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return layout.Write(s.Dir, empty.Index)
	}
	return p, err
}

// Put stores idx under each of tags, replacing what those names held.
// Writers of one store take turns: index.json is rewritten whole.
func (s *Store) Put(idx v1.ImageIndex, tags []name.Reference) error {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return err
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	p, err := s.path()
	if err != nil {
		return fmt.Errorf("opening store %s: %w", s.Dir, err)
	}
	if err := s.putLayers(idx); err != nil {
		return err
	}
	for _, t := range tags {
		ann := map[string]string{refNameAnnotation: t.Name()}
		if err := p.ReplaceIndex(idx, match.Annotation(refNameAnnotation, t.Name()), layout.WithAnnotations(ann)); err != nil {
			return fmt.Errorf("storing %s: %w", t.Name(), err)
		}
	}
	return nil
}

// putLayers stores the layers of idx's images that the store lacks, each
// into a temporary file renamed into place once its digest checked out:
// ggcr's layout writes straight to the final name, where a read that
// fails half way would leave a blob that is not what its name says.
func (s *Store) putLayers(idx v1.ImageIndex) error {
	m, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range m.Manifests {
		if !d.MediaType.IsImage() {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return err
		}
		ls, err := img.Layers()
		if err != nil {
			return err
		}
		for _, l := range ls {
			if err := s.putBlob(l); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) putBlob(l v1.Layer) error {
	h, err := l.Digest()
	if err != nil {
		return err
	}
	size, err := l.Size()
	if err != nil {
		return err
	}
	final := filepath.Join(s.Dir, "blobs", h.Algorithm, h.Hex)
	if fi, err := os.Stat(final); err == nil && fi.Size() == size {
		return nil
	}
	if err := writeBlob(final, l, h, size); err != nil {
		return fmt.Errorf("storing layer %s: %w", h, err)
	}
	return nil
}

// lock takes the store's write lock, held across processes.
func (s *Store) lock() (func(), error) {
	unlock, err := lockFile(filepath.Join(s.Dir, ".lock"))
	if err != nil {
		return nil, fmt.Errorf("locking store: %w", err)
	}
	return unlock, nil
}

func (s *Store) lookup(r name.Reference) (*Source, bool, error) {
	if _, err := os.Stat(filepath.Join(s.Dir, "index.json")); err != nil {
		return nil, false, nil
	}
	p, err := layout.FromPath(s.Dir)
	if err != nil {
		return nil, false, err
	}
	return lookupLayout(p, r.Name(), func(n string) bool { return n == r.Name() })
}

// lookupLayout finds the first manifest of a layout whose ref name matches.
func lookupLayout(p layout.Path, srcName string, match func(string) bool) (*Source, bool, error) {
	ii, err := p.ImageIndex()
	if err != nil {
		return nil, false, err
	}
	m, err := ii.IndexManifest()
	if err != nil {
		return nil, false, err
	}
	for _, d := range m.Manifests {
		if !match(d.Annotations[refNameAnnotation]) {
			continue
		}
		src := &Source{Name: srcName}
		if d.MediaType.IsIndex() {
			src.Index, err = ii.ImageIndex(d.Digest)
		} else {
			src.Image, err = ii.Image(d.Digest)
		}
		return src, true, err
	}
	return nil, false, nil
}
