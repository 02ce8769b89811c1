package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// A build cache kept outside this machine, as buildx keeps one: in a
// registry (type=registry,ref=R) or in an OCI image layout
// (type=local,dest=DIR). Either way it is one plain OCI image manifest for
// every platform of a build: artifact type CacheArtifactType, a JSON config
// (CacheConfigType) mapping each step's cache key to the layer it made and
// its created_by, and the layers themselves, which are the built images'
// own blobs (mounted, in a registry, from the repository they were pushed
// to).

// CacheRef names a cache: a registry reference, or an OCI layout directory.
type CacheRef struct {
	Ref string // registry reference (type=registry)
	Dir string // OCI image layout (type=local)
}

func (c CacheRef) String() string {
	if c.Dir != "" {
		return c.Dir
	}
	return c.Ref
}

// cacheTag names the cache in an OCI layout's index.json.
const cacheTag = "manifold-cache"

// ErrNoCache is a cache ref that holds nothing yet: a first build.
var ErrNoCache = errors.New("no cache there yet")

// ImportedCache is a cache read from a registry or a layout: its steps,
// and its layers, which are read only when a build needs their bytes.
type ImportedCache struct {
	steps map[string]Step
	layer func(v1.Hash) (v1.Layer, error)
	ref   name.Reference // the registry repository, for mounts; nil for a layout
}

// InlineCacheKey is the top-level field of an image config where
// --cache-to type=inline keeps the build's steps (a cache config), as
// BuildKit keeps its own under moby.buildkit.cache.v0.
const InlineCacheKey = "manifold.cache.v0"

// WithInlineCache is img with steps kept in its config, under
// InlineCacheKey: the image is its own cache.
func WithInlineCache(img v1.Image, steps []CacheStep) (v1.Image, error) {
	cfg, err := newCacheConfig(steps)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	return PatchConfig(img, func(doc map[string]json.RawMessage) error {
		doc[InlineCacheKey] = data
		return nil
	})
}

// OpenCache reads a cache's manifest and config (no layer): a manifold
// cache, or an image (or index) built with --cache-to type=inline.
func OpenCache(ctx context.Context, c CacheRef, o Options) (*ImportedCache, error) {
	img, ref, err := openCacheImage(ctx, c, o)
	if err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading cache %s: %w", c, err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading cache %s: %w", c, err)
	}
	if m.Config.MediaType != CacheConfigType {
		return openInline(ctx, c, raw, ref, o)
	}
	cfg, err := parseCacheConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c, err)
	}
	return &ImportedCache{steps: cfg.Steps, layer: img.LayerByDigest, ref: ref}, nil
}

// openInline reads the steps an image's config keeps (type=inline). Their
// layers are blobs of the image's repository, fetched when read and
// mounted when pushed.
func openInline(ctx context.Context, c CacheRef, raw []byte, ref name.Reference, o Options) (*ImportedCache, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil || ref == nil {
		return nil, fmt.Errorf("%s is not a manifold cache", c)
	}
	data, ok := doc[InlineCacheKey]
	if !ok {
		return nil, fmt.Errorf("%s: %w (an image without an inline cache: build it with --cache-to type=inline)", c, ErrNoCache)
	}
	cfg, err := parseCacheConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c, err)
	}
	opts := o.remote(ctx)
	layer := func(h v1.Hash) (v1.Layer, error) { return remote.Layer(ref.Context().Digest(h.String()), opts...) }
	return &ImportedCache{steps: cfg.Steps, layer: layer, ref: ref}, nil
}

func openCacheImage(ctx context.Context, c CacheRef, o Options) (v1.Image, name.Reference, error) {
	if c.Dir != "" {
		p, err := layout.FromPath(c.Dir)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", c.Dir, ErrNoCache)
		}
		src, ok, err := lookupLayout(p, c.Dir, func(n string) bool { return n == cacheTag })
		if err != nil || !ok || src.Image == nil {
			return nil, nil, fmt.Errorf("%s: %w", c.Dir, ErrNoCache)
		}
		return src.Image, nil, nil
	}
	r, err := name.ParseReference(c.Ref)
	if err != nil {
		return nil, nil, err
	}
	desc, err := remote.Get(r, o.remote(ctx)...)
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return nil, nil, fmt.Errorf("%s: %w", c.Ref, ErrNoCache)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading cache %s: %w", c.Ref, err)
	}
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		return img, r, err
	}
	// An index built with an inline cache: every image's config keeps the
	// steps of every platform; the first one's will do.
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, err
	}
	for _, d := range m.Manifests {
		if d.MediaType.IsImage() {
			img, err := idx.Image(d.Digest)
			return img, r, err
		}
	}
	return nil, nil, fmt.Errorf("%s: an index of no image", c.Ref)
}

// Get finds a step. Its layer is lazy: a build that only reuses it pushes
// it by mounting, and never reads it.
func (c *ImportedCache) Get(key string) (*Step, v1.Layer, bool) {
	st, ok := c.steps[key]
	if !ok {
		return nil, nil, false
	}
	if st.Layer == nil {
		return &st, nil, true
	}
	l, err := c.layer(st.Layer.Digest)
	if err != nil {
		return nil, nil, false
	}
	var known v1.Layer = &knownLayer{Layer: l, info: *st.Layer}
	if c.ref != nil {
		known = &remote.MountableLayer{Layer: known, Reference: c.ref}
	}
	return &st, known, true
}

// knownLayer is a cache's layer with the digests the cache recorded: its
// diff ID cannot come from the cache's config, which is no image config.
type knownLayer struct {
	v1.Layer
	info LayerInfo
}

func (k *knownLayer) DiffID() (v1.Hash, error)            { return k.info.DiffID, nil }
func (k *knownLayer) Digest() (v1.Hash, error)            { return k.info.Digest, nil }
func (k *knownLayer) Size() (int64, error)                { return k.info.Size, nil }
func (k *knownLayer) MediaType() (types.MediaType, error) { return k.info.MediaType, nil }

// CacheStep is a step to export: its key, what it made, and its layer.
type CacheStep struct {
	Key   string
	Step  Step
	Layer v1.Layer // nil: none
}

// ExportCache writes steps as a cache to c. Layers the build pushed to
// mountFrom (a repository of the same registry; nil: none) are mounted
// from there instead of uploaded.
func ExportCache(ctx context.Context, c CacheRef, steps []CacheStep, mountFrom name.Reference, o Options) error {
	img, err := cacheImage(steps, mountFrom)
	if err != nil {
		return err
	}
	if c.Dir != "" {
		p, err := layout.FromPath(c.Dir)
		if err != nil {
			if p, err = layout.Write(c.Dir, empty.Index); err != nil {
				return err
			}
		}
		return p.ReplaceImage(img, match.Annotation(refNameAnnotation, cacheTag),
			layout.WithAnnotations(map[string]string{refNameAnnotation: cacheTag}))
	}
	r, err := name.ParseReference(c.Ref)
	if err != nil {
		return err
	}
	if err := remote.Write(r, img, o.remote(ctx)...); err != nil {
		if strings.Contains(err.Error(), "MANIFEST_INVALID") || strings.Contains(err.Error(), "unsupported") {
			return fmt.Errorf("exporting cache to %s: the registry rejects OCI artifact manifests: %w", c.Ref, err)
		}
		return fmt.Errorf("exporting cache to %s: %w", c.Ref, err)
	}
	return nil
}

// cacheImage is the cache as an image: the config, and each distinct
// layer once.
func cacheImage(steps []CacheStep, mountFrom name.Reference) (v1.Image, error) {
	cfg, err := newCacheConfig(steps)
	if err != nil {
		return nil, err
	}
	core := &cacheCore{layers: map[v1.Hash]v1.Layer{}}
	var descs []v1.Descriptor
	for _, s := range steps {
		if info := cfg.Steps[s.Key].Layer; info != nil {
			if _, dup := core.layers[info.Digest]; !dup {
				core.layers[info.Digest] = mountable(s.Layer, mountFrom)
				descs = append(descs, v1.Descriptor{MediaType: info.MediaType, Digest: info.Digest, Size: info.Size})
			}
		}
	}
	if core.config, err = json.Marshal(cfg); err != nil {
		return nil, err
	}
	cd, _, err := v1.SHA256(strings.NewReader(string(core.config)))
	if err != nil {
		return nil, err
	}
	core.manifest, err = json.Marshal(cacheManifest{
		SchemaVersion: 2, MediaType: types.OCIManifestSchema1, ArtifactType: CacheArtifactType,
		Config: v1.Descriptor{MediaType: CacheConfigType, Digest: cd, Size: int64(len(core.config))},
		Layers: descs,
	})
	if err != nil {
		return nil, err
	}
	core.order = descs
	return core, nil
}

// newCacheConfig is the cache config of steps: each key, what its step
// made.
func newCacheConfig(steps []CacheStep) (*cacheConfig, error) {
	cfg := &cacheConfig{Version: 1, Steps: map[string]Step{}}
	for _, s := range steps {
		st := s.Step
		if s.Layer != nil {
			info, err := Info(s.Layer)
			if err != nil {
				return nil, err
			}
			st.Layer = info
		}
		cfg.Steps[s.Key] = st
	}
	return cfg, nil
}

// mountable lets a layer the build pushed to mountFrom be mounted from
// there; one that came from a registry already mounts from its own.
func mountable(l v1.Layer, from name.Reference) v1.Layer {
	if _, ok := l.(*remote.MountableLayer); ok || from == nil {
		return l
	}
	return &remote.MountableLayer{Layer: l, Reference: from}
}

type cacheManifest struct {
	SchemaVersion int64           `json:"schemaVersion"`
	MediaType     types.MediaType `json:"mediaType"`
	ArtifactType  types.MediaType `json:"artifactType"`
	Config        v1.Descriptor   `json:"config"`
	Layers        []v1.Descriptor `json:"layers"`
}

// cacheCore is the cache as a v1.Image: layers as given, so that
// remote.Write mounts the mountable ones; its config is no image config.
type cacheCore struct {
	config, manifest []byte
	layers           map[v1.Hash]v1.Layer
	order            []v1.Descriptor
}

var _ v1.Image = (*cacheCore)(nil)

func (c *cacheCore) RawConfigFile() ([]byte, error)      { return c.config, nil }
func (c *cacheCore) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (c *cacheCore) RawManifest() ([]byte, error)        { return c.manifest, nil }
func (c *cacheCore) Size() (int64, error)                { return int64(len(c.manifest)), nil }
func (c *cacheCore) Digest() (v1.Hash, error)            { return partial.Digest(c) }
func (c *cacheCore) Manifest() (*v1.Manifest, error)     { return partial.Manifest(c) }
func (c *cacheCore) ConfigName() (v1.Hash, error)        { return partial.ConfigName(c) }
func (c *cacheCore) ConfigFile() (*v1.ConfigFile, error) {
	return nil, errors.New("a manifold cache has no image config")
}

func (c *cacheCore) Layers() ([]v1.Layer, error) {
	var out []v1.Layer
	for _, d := range c.order {
		out = append(out, c.layers[d.Digest])
	}
	return out, nil
}

func (c *cacheCore) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	if l, ok := c.layers[h]; ok {
		return l, nil
	}
	if cn, _ := c.ConfigName(); cn == h {
		return partial.ConfigLayer(c)
	}
	return nil, fmt.Errorf("the cache has no layer %s", h)
}

func (c *cacheCore) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	for _, l := range c.layers {
		if d, err := l.DiffID(); err == nil && d == h {
			return l, nil
		}
	}
	return nil, fmt.Errorf("the cache has no layer with diff ID %s", h)
}
