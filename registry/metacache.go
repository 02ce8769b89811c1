package registry

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The metadata cache keeps the image manifests and configs that a base
// index names, by digest: what a digest names never changes, so a later
// build asks the registry only for the tag's index (which may have moved),
// and reads a platform's manifest and config from disk. Each costs a round
// trip to the registry otherwise, a TLS handshake's worth on the internet.

// metaPath is where the cache in dir keeps the blob h.
func metaPath(dir string, h v1.Hash) string {
	return filepath.Join(dir, h.Algorithm, h.Hex)
}

// getMeta reads h from the cache; false when it is not there or its bytes
// are not what h says (then it is removed).
func getMeta(dir string, h v1.Hash) ([]byte, bool) {
	data, err := os.ReadFile(metaPath(dir, h))
	if err != nil {
		return nil, false
	}
	if sha256Of(data) != h {
		os.Remove(metaPath(dir, h))
		return nil, false
	}
	return data, true
}

// putMeta keeps data as h, when it is what h says; best effort.
func putMeta(dir string, h v1.Hash, data []byte) {
	writeBlob(metaPath(dir, h), static.NewLayer(data, ""), h, int64(len(data)))
}

// image reads the index's entry d: its manifest and config from the
// metadata cache when both are there, else from the registry, keeping them.
func (s *Source) image(d v1.Descriptor) (v1.Image, error) {
	if s.metaDir != "" {
		if img, err := s.cachedImage(d); err == nil {
			return img, nil
		}
	}
	img, err := s.Index.Image(d.Digest)
	if err != nil || s.metaDir == "" {
		return img, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	putMeta(s.metaDir, d.Digest, raw)
	putMeta(s.metaDir, m.Config.Digest, cfg)
	return img, nil
}

// cachedImage is the image of d from the metadata cache, its layers still
// in the registry: read when needed, mounted when pushed to another
// repository there.
func (s *Source) cachedImage(d v1.Descriptor) (v1.Image, error) {
	raw, ok := getMeta(s.metaDir, d.Digest)
	if !ok {
		return nil, errNotCached
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	cfg, ok := getMeta(s.metaDir, m.Config.Digest)
	if !ok {
		return nil, errNotCached
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(cfg))
	if err != nil {
		return nil, err
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("%s: %d layers and %d diff IDs", d.Digest, len(m.Layers), len(cf.RootFS.DiffIDs))
	}
	ref := s.repo.Digest(d.Digest.String())
	img, err := partial.CompressedToImage(&metaImage{manifest: raw, config: cfg, m: m, cf: cf, ref: ref, opts: s.remoteOpts})
	if err != nil {
		return nil, err
	}
	return &mountableImage{Image: img, from: ref}, nil
}

// mountableImage gives its layers as mountable from the repository they
// are in, as remote's own images do.
type mountableImage struct {
	v1.Image
	from name.Reference
}

func (mi *mountableImage) Layers() ([]v1.Layer, error) {
	ls, err := mi.Image.Layers()
	for i, l := range ls {
		ls[i] = mountable(l, mi.from)
	}
	return ls, err
}

func (mi *mountableImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := mi.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return mountable(l, mi.from), nil
}

func (mi *mountableImage) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	l, err := mi.Image.LayerByDiffID(h)
	if err != nil {
		return nil, err
	}
	return mountable(l, mi.from), nil
}

var errNotCached = errors.New("not in the metadata cache")

// metaImage is an image whose manifest and config are at hand.
type metaImage struct {
	manifest, config []byte
	m                *v1.Manifest
	cf               *v1.ConfigFile
	ref              name.Digest // the image, where its layers are
	opts             []remote.Option
}

func (mi *metaImage) RawManifest() ([]byte, error)   { return mi.manifest, nil }
func (mi *metaImage) RawConfigFile() ([]byte, error) { return mi.config, nil }
func (mi *metaImage) MediaType() (types.MediaType, error) {
	if mi.m.MediaType != "" {
		return mi.m.MediaType, nil
	}
	return types.OCIManifestSchema1, nil
}

func (mi *metaImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == mi.m.Config.Digest {
		return static.NewLayer(mi.config, mi.m.Config.MediaType), nil
	}
	for i, d := range mi.m.Layers {
		if d.Digest != h {
			continue
		}
		return &metaLayer{desc: d, diffID: mi.cf.RootFS.DiffIDs[i], ref: mi.ref.Context().Digest(h.String()), opts: mi.opts}, nil
	}
	return nil, fmt.Errorf("%s has no layer %s", mi.ref, h)
}

// metaLayer is a layer of a metaImage: described by its descriptor and
// the config's diff ID, its bytes fetched when read.
type metaLayer struct {
	desc   v1.Descriptor
	diffID v1.Hash
	ref    name.Digest
	opts   []remote.Option
}

func (ml *metaLayer) Digest() (v1.Hash, error)            { return ml.desc.Digest, nil }
func (ml *metaLayer) DiffID() (v1.Hash, error)            { return ml.diffID, nil }
func (ml *metaLayer) Size() (int64, error)                { return ml.desc.Size, nil }
func (ml *metaLayer) MediaType() (types.MediaType, error) { return ml.desc.MediaType, nil }
func (ml *metaLayer) Descriptor() (*v1.Descriptor, error) { d := ml.desc; return &d, nil }
func (ml *metaLayer) Compressed() (io.ReadCloser, error) {
	l, err := remote.Layer(ml.ref, ml.opts...)
	if err != nil {
		return nil, err
	}
	return l.Compressed()
}
