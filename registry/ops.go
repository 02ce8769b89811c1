package registry

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/manifold-build/manifold/emulate/platform"
)

// Write puts src (an index with every platform, or one image) at dst by
// digest first and the tag last: blobs the registry has are skipped, those
// in another repository of it mounted, the rest streamed from where src
// is, never held whole in memory.
func Write(ctx context.Context, src *Source, dst name.Reference, o Options) (v1.Hash, error) {
	var m manifest = src.Image
	if src.Index != nil {
		m = src.Index
	}
	return NewPusher(ctx, []name.Reference{dst}, o).write(ctx, m)
}

// Select narrows a multi-platform source to the platforms given: one
// platform gives that image alone, several an index of them in the
// source's order.
func (s *Source) Select(plats []platform.Platform) (*Source, error) {
	if len(plats) == 0 {
		return s, nil
	}
	if s.Index == nil {
		if _, _, err := s.forPlatform(plats[0]); err != nil || len(plats) > 1 {
			return nil, fmt.Errorf("%s is a single-platform image: --platform cannot pick from it", s.Name)
		}
		return s, nil
	}
	if len(plats) == 1 {
		img, _, err := s.forPlatform(plats[0])
		if err != nil {
			return nil, err
		}
		return &Source{Name: s.Name, Image: img}, nil
	}
	ms, err := s.Manifests()
	if err != nil {
		return nil, err
	}
	mt, err := s.Index.MediaType()
	if err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, mt)
	for _, p := range plats {
		found := false
		for _, d := range ms {
			if p.Matches(*d.Platform) {
				img, err := s.Index.Image(d.Digest)
				if err != nil {
					return nil, err
				}
				idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: d})
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("%s has no variant for %s", s.Name, p)
		}
	}
	return &Source{Name: s.Name, Index: idx}, nil
}

// Entries are the platform images of sources, for an index of them all:
// each image with its descriptor (platform included), in the order given.
// Two entries for one platform are refused unless duplicates is set.
func Entries(sources []*Source, duplicates bool) ([]mutate.IndexAddendum, error) {
	var out []mutate.IndexAddendum
	seen := map[platform.Platform]string{}
	add := func(src *Source, img v1.Image, d v1.Descriptor) error {
		if d.Platform == nil {
			cf, err := img.ConfigFile()
			if err != nil {
				return err
			}
			d.Platform = cf.Platform()
		}
		if d.Platform == nil {
			return fmt.Errorf("%s: an image without a platform", src.Name)
		}
		p := platform.FromOCI(*d.Platform)
		if other, dup := seen[p]; dup && !duplicates {
			return fmt.Errorf("%s and %s both have %s (--allow-duplicates to keep both)", other, src.Name, p)
		}
		seen[p] = src.Name
		d.Annotations = nil
		out = append(out, mutate.IndexAddendum{Add: img, Descriptor: d})
		return nil
	}
	for _, src := range sources {
		if src.Image != nil {
			d, err := partial.Descriptor(src.Image)
			if err != nil {
				return nil, err
			}
			if err := add(src, src.Image, *d); err != nil {
				return nil, err
			}
			continue
		}
		ms, err := src.Manifests()
		if err != nil {
			return nil, err
		}
		for _, d := range ms {
			img, err := src.Index.Image(d.Digest)
			if err != nil {
				return nil, err
			}
			if err := add(src, img, d); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// NewIndex is an index of entries, OCI's unless every entry is a Docker
// manifest (then a Docker manifest list, as buildx imagetools makes).
func NewIndex(entries []mutate.IndexAddendum) v1.ImageIndex {
	mt := types.DockerManifestList
	for _, e := range entries {
		if e.Descriptor.MediaType != types.DockerManifestSchema2 {
			mt = types.OCIImageIndex
		}
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, mt), entries...)
}

// Tag points tags at what ref names, in ref's repository (a tag may be
// just a name, or a reference in the same registry).
func Tag(ctx context.Context, ref string, tags []string, o Options) error {
	r, err := o.ParseReference(ref)
	if err != nil {
		return err
	}
	desc, err := remote.Get(r, o.remote(ctx)...)
	if err != nil {
		return fmt.Errorf("reading %s: %w", ref, err)
	}
	for _, t := range tags {
		dst, err := name.NewTag(t)
		if !strings.ContainsAny(t, "/:") {
			dst, err = name.NewTag(r.Context().String() + ":" + t)
		}
		if err != nil {
			return err
		}
		if err := remote.Tag(dst, desc, o.remote(ctx)...); err != nil {
			return fmt.Errorf("tagging %s: %w", dst, err)
		}
	}
	return nil
}

// Digest is the digest of the manifest or index ref names.
func Digest(ctx context.Context, ref string, o Options) (v1.Hash, error) {
	r, err := o.ParseReference(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	desc, err := remote.Head(r, o.remote(ctx)...)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("reading %s: %w", ref, err)
	}
	return desc.Digest, nil
}

// Tags lists the tags of a repository.
func Tags(ctx context.Context, repo string, o Options) ([]string, error) {
	r, err := name.NewRepository(repo)
	if err != nil {
		return nil, err
	}
	tags, err := remote.List(r, o.remote(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", repo, err)
	}
	return tags, nil
}
