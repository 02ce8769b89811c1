package registry

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/manifold-build/manifold/emulate/platform"
)

// Source is an image or image index that was looked up but not read: only
// its top manifest has been fetched.
type Source struct {
	Name  string        // the full reference, or oci-layout://DIR[:TAG]
	Index v1.ImageIndex // set for a multi-platform source
	Image v1.Image      // set for a single-platform source

	maxUnpacked int64           // see Options.MaxUnpacked
	metaDir     string          // see Options.MetaDir
	repo        name.Repository // where a registry source's layers are
	remoteOpts  []remote.Option
}

// Open finds ref, reading only its top manifest: oci-layout://DIR[:TAG] in
// an OCI image layout, else in the local store and then in its registry.
func Open(ctx context.Context, ref string, o Options) (*Source, error) {
	src, err := open(ctx, ref, o)
	if err == nil {
		src.maxUnpacked = o.maxUnpacked()
	}
	return src, err
}

func open(ctx context.Context, ref string, o Options) (*Source, error) {
	if dir, ok := strings.CutPrefix(ref, layoutScheme); ok {
		return openLayout(dir)
	}
	r, err := o.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	if o.Store != nil {
		if src, ok, err := o.Store.lookup(r); err != nil || ok {
			return src, err
		}
	}
	ropts := o.remote(ctx)
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", ref, err)
	}
	src := &Source{Name: r.Name(), metaDir: o.MetaDir, repo: r.Context(), remoteOpts: ropts}
	if desc.MediaType.IsIndex() {
		src.Index, err = desc.ImageIndex()
	} else {
		src.Image, err = desc.Image()
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", ref, err)
	}
	return src, nil
}

// MediaType is the source's top manifest media type.
func (s *Source) MediaType() (types.MediaType, error) {
	if s.Index != nil {
		return s.Index.MediaType()
	}
	return s.Image.MediaType()
}

// Digest is the digest of the source's top manifest.
func (s *Source) Digest() (v1.Hash, error) {
	if s.Index != nil {
		return s.Index.Digest()
	}
	return s.Image.Digest()
}

// Manifests lists the platform variants of an index, in its order.
func (s *Source) Manifests() ([]v1.Descriptor, error) {
	if s.Index == nil {
		return nil, nil
	}
	m, err := s.Index.IndexManifest()
	if err != nil {
		return nil, err
	}
	var out []v1.Descriptor
	for _, d := range m.Manifests {
		if d.MediaType.IsImage() && d.Platform != nil && d.Platform.OS != "unknown" {
			out = append(out, d)
		}
	}
	return out, nil
}

// ForPlatform picks the variant for p. Only the chosen manifest is read
// (and, for a single-platform source, its config to check the platform).
// Every read of its layers is verified (see verified).
func (s *Source) ForPlatform(p platform.Platform) (v1.Image, *v1.Descriptor, error) {
	img, d, err := s.forPlatform(p)
	if err != nil {
		return nil, nil, err
	}
	return verify(img, fmt.Sprintf("%s (%s)", s.Name, p), s.maxUnpacked), d, nil
}

func (s *Source) forPlatform(p platform.Platform) (v1.Image, *v1.Descriptor, error) {
	if s.Index == nil {
		cf, err := s.Image.ConfigFile()
		if err != nil {
			return nil, nil, err
		}
		have := cf.Platform()
		if have == nil || !p.Matches(*have) {
			return nil, nil, fmt.Errorf("%s is a single-platform image for %s, not %s", s.Name, formatPtr(have), p)
		}
		d, err := partial.Descriptor(s.Image)
		if err != nil {
			return nil, nil, err
		}
		d.Platform = have
		return s.Image, d, nil
	}
	ms, err := s.Manifests()
	if err != nil {
		return nil, nil, err
	}
	var have []string
	for _, d := range ms {
		if p.Matches(*d.Platform) {
			img, err := s.image(d)
			if err != nil {
				return nil, nil, fmt.Errorf("reading %s for %s: %w", s.Name, p, err)
			}
			return img, &d, nil
		}
		have = append(have, platform.FromOCI(*d.Platform).String())
	}
	return nil, nil, fmt.Errorf("%s has no variant for %s (it has %s)", s.Name, p, strings.Join(have, ", "))
}

func formatPtr(p *v1.Platform) string {
	if p == nil {
		return "an unknown platform"
	}
	return platform.FromOCI(*p).String()
}
