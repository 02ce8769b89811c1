package registry

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Push writes idx to the registry of each tag. Blobs that the registry has
// are skipped and those in another repository of the same registry are
// mounted; a blob shared by several platforms is sent once. Everything goes
// by digest first (images, then the index) and the tags are set last, so a
// failure part-way leaves no tag created or moved.
func Push(ctx context.Context, idx v1.ImageIndex, tags []name.Reference, o Options) (v1.Hash, error) {
	h, err := idx.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	opts := o.remote(ctx)
	if o.OnProgress != nil {
		updates, stop, exited := make(chan v1.Update, 64), make(chan struct{}), make(chan struct{})
		defer func() { close(stop); <-exited }() // nothing is told after Push returns
		go func() {
			defer close(exited)
			for {
				select {
				case u, ok := <-updates:
					if !ok {
						return
					}
					o.OnProgress(u.Complete, u.Total)
				case <-stop:
					return
				}
			}
		}()
		opts = append(opts, remote.WithProgress(updates))
	}
	p, err := remote.NewPusher(opts...)
	if err != nil {
		return v1.Hash{}, err
	}
	done := map[string]bool{}
	for _, t := range tags {
		repo := t.Context()
		if done[repo.String()] {
			continue
		}
		done[repo.String()] = true
		if err := p.Push(ctx, repo.Digest(h.String()), idx); err != nil {
			return v1.Hash{}, fmt.Errorf("pushing to %s: %w", repo, err)
		}
	}
	for _, t := range tags {
		if _, ok := t.(name.Digest); ok {
			continue
		}
		if err := p.Push(ctx, t, idx); err != nil {
			return v1.Hash{}, fmt.Errorf("tagging %s: %w", t, err)
		}
	}
	return h, nil
}
