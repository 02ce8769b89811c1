package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"
)

// Push writes idx to the registry of each tag. Blobs that the registry has
// are skipped and those in another repository of the same registry are
// mounted; a blob shared by several platforms is sent once. Each image goes
// by digest after its blobs, into every tag's repository, and the index to
// the tags last, so a failure part-way leaves no tag created or moved.
func Push(ctx context.Context, idx v1.ImageIndex, tags []name.Reference, o Options) (v1.Hash, error) {
	return NewPusher(ctx, tags, o).Push(ctx, idx)
}

// A Pusher pushes a result to its tags, as Push does. Made before the
// build, it asks meanwhile what each tag names now: the first round trips
// of a push (each registry's ping, a token, the tag's digest) are then
// over before there is anything to push.
type Pusher struct {
	// OnProgress hears, during Push, how many bytes of it are sent of how
	// many; NewPusher sets it to Options.OnProgress.
	OnProgress func(complete, total int64)

	tags  []name.Reference
	o     Options
	at    []v1.Hash // what each tag names, once asked is closed
	asked chan struct{}
	when  time.Time // when the asking ended
	up    *uploader
}

// NewPusher starts asking what tags name, and for a push token of each
// repository; ctx bounds the asking.
func NewPusher(ctx context.Context, tags []name.Reference, o Options) *Pusher {
	p := &Pusher{OnProgress: o.OnProgress, tags: tags, o: o, at: make([]v1.Hash, len(tags)), asked: make(chan struct{}), up: newUploader(o)}
	go func() {
		defer func() { p.when = time.Now(); close(p.asked) }()
		q, err := remote.NewPuller(o.remote(ctx)...)
		if err != nil {
			return
		}
		var wg sync.WaitGroup
		for i, t := range tags {
			if _, ok := t.(name.Tag); ok {
				wg.Go(func() { p.at[i] = existing(ctx, q, t) })
			}
			wg.Go(func() { p.up.client(ctx, t.Context()) })
		}
		wg.Wait()
	}()
	return p
}

// Push writes idx to the tags.
func (p *Pusher) Push(ctx context.Context, idx v1.ImageIndex) (v1.Hash, error) {
	return p.write(ctx, idx)
}

// write writes m, an index or an image, to the tags.
func (p *Pusher) write(ctx context.Context, m manifest) (v1.Hash, error) {
	h, err := m.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	opts := p.o.remote(ctx)
	if tell := p.OnProgress; tell != nil {
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
					tell(u.Complete, u.Total)
				case <-stop:
					return
				}
			}
		}()
		opts = append(opts, remote.WithProgress(updates))
	}
	select {
	case <-p.asked:
	case <-ctx.Done():
		return v1.Hash{}, ctx.Err()
	}
	at := p.at
	if time.Since(p.when) > stale && slices.Contains(at, h) {
		// A tag that named the result when the build began may have moved
		// since, and would be left where it went: asked again.
		if at, err = p.askAgain(ctx, h); err != nil {
			return v1.Hash{}, err
		}
	}
	pp, err := remote.NewPusher(opts...)
	if err != nil {
		return v1.Hash{}, err
	}
	w := &pushing{p: pp, up: p.up, held: map[name.Repository]map[v1.Hash]bool{}}
	for i, t := range p.tags {
		if at := at[i]; at != (v1.Hash{}) && at != h && p.o.MetaDir != "" {
			repo := t.Context()
			if w.held[repo] == nil {
				w.held[repo] = map[v1.Hash]bool{}
			}
			heldUnder(p.o.MetaDir, at, w.held[repo])
		}
	}
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		if p.o.MetaDir != "" {
			keepPushed(p.o.MetaDir, m)
		}
	}()
	defer func() { <-kept }()
	return h, w.put(ctx, m, h, p.tags, at)
}

// stale is how old the answer to what a tag names may be for a push to
// leave the tag alone because it names the result already.
const stale = time.Second

// askAgain asks again what the tags that named h name now.
func (p *Pusher) askAgain(ctx context.Context, h v1.Hash) ([]v1.Hash, error) {
	q, err := remote.NewPuller(p.o.remote(ctx)...)
	if err != nil {
		return nil, err
	}
	at := slices.Clone(p.at)
	for i, t := range p.tags {
		if at[i] == h {
			at[i] = existing(ctx, q, t)
		}
	}
	return at, nil
}

// manifest is an image or an index.
type manifest interface {
	remote.Taggable
	partial.Describable
}

// pushing is one push under way.
type pushing struct {
	p  *remote.Pusher
	up *uploader
	// held is what each repository holds for certain: the blobs and
	// manifests under what its tag names, as far as the metadata cache
	// knows them (each push keeps there what it wrote). They are not asked
	// for again.
	held map[name.Repository]map[v1.Hash]bool
}

// put writes m, whose digest is h, to every repository of tags: what it
// names first, each image with its blobs and then its manifest by digest,
// all repositories at once; then m itself at each tag (or digest). A tag
// already at h (at says what each names) is left alone, and so is
// everything under it when every tag is. Each request is a registry's
// latency and work, the largest part of a push with little new: none is
// sent that another's answer, or what the repository is known to hold,
// makes needless.
func (w *pushing) put(ctx context.Context, m manifest, h v1.Hash, tags []name.Reference, at []v1.Hash) error {
	var repos []name.Repository
	for i, t := range tags {
		if at[i] != h && !slices.Contains(repos, t.Context()) {
			repos = append(repos, t.Context())
		}
	}
	g, gctx := newGroup(ctx)
	for _, repo := range repos {
		g.Go(func() error {
			if err := w.writeNamed(gctx, repo, m); err != nil {
				return fmt.Errorf("pushing to %s: %w", repo, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i, t := range tags {
		if at[i] == h {
			continue
		}
		if err := w.p.Put(ctx, t, m); err != nil {
			if _, ok := t.(name.Tag); ok {
				return fmt.Errorf("tagging %s: %w", t, err)
			}
			return fmt.Errorf("pushing to %s: %w", t.Context(), err)
		}
	}
	return nil
}

// writeNamed writes into repo what m names, each by digest, unless repo
// is known to hold it: an image's layers and config; an index's images,
// each with its blobs first and its manifest last (not asked for first: a
// build's new images are new, and one that is there is written again, a
// few hundred bytes), and nested indexes.
func (w *pushing) writeNamed(ctx context.Context, repo name.Repository, m manifest) error {
	held := w.held[repo]
	g, ctx := newGroup(ctx)
	g.SetLimit(pushJobs)
	upload := func(l v1.Layer, ask bool) error {
		if d, err := l.Digest(); err == nil && held[d] {
			return nil
		}
		if _, ok := l.(*remote.MountableLayer); !ok { // one of the registry's own goes as ggcr mounts it
			if there, err := w.up.put(ctx, repo, l, ask); there || err != nil {
				return err
			}
		}
		return w.p.Upload(ctx, repo, l)
	}
	switch m := m.(type) {
	case v1.Image:
		blobs, err := m.Layers()
		if err != nil {
			return err
		}
		cl, err := partial.ConfigLayer(m)
		if err != nil {
			return err
		}
		for _, l := range blobs {
			g.Go(func() error { return upload(l, true) })
		}
		g.Go(func() error { return upload(cl, false) })
	case v1.ImageIndex:
		children, err := partial.Manifests(m)
		if err != nil {
			return err
		}
		for _, c := range children {
			if l, ok := c.(v1.Layer); ok {
				g.Go(func() error { return upload(l, true) })
				continue
			}
			d, err := c.Digest()
			if err != nil {
				return err
			}
			if held[d] {
				continue
			}
			switch c := c.(type) {
			case v1.Image:
				g.Go(func() error {
					if err := w.writeNamed(ctx, repo, c); err != nil {
						return err
					}
					return w.p.Put(ctx, repo.Digest(d.String()), c)
				})
			case v1.ImageIndex:
				g.Go(func() error { return w.p.Push(ctx, repo.Digest(d.String()), c) })
			default:
				return fmt.Errorf("an index entry of unknown kind %T", c)
			}
		}
	}
	return g.Wait()
}

// heldUnder adds to held the manifest d and what it names, as far as the
// metadata cache in dir knows: a registry takes a manifest only when the
// blobs and manifests it names are in its repository.
func heldUnder(dir string, d v1.Hash, held map[v1.Hash]bool) {
	held[d] = true
	raw, ok := getMeta(dir, d)
	if !ok {
		return
	}
	var m struct {
		Config    *v1.Descriptor  `json:"config"`
		Layers    []v1.Descriptor `json:"layers"`
		Manifests []v1.Descriptor `json:"manifests"`
	}
	if json.Unmarshal(raw, &m) != nil {
		return
	}
	if m.Config != nil {
		held[m.Config.Digest] = true
	}
	for _, l := range m.Layers {
		held[l.Digest] = true
	}
	for _, c := range m.Manifests {
		heldUnder(dir, c.Digest, held)
	}
}

// keepPushed keeps the manifests m is made of in the metadata cache in
// dir (best effort), for heldUnder to find when m is what a tag names.
func keepPushed(dir string, m manifest) {
	d, err := m.Digest()
	if err != nil {
		return
	}
	if _, err := os.Stat(metaPath(dir, d)); err != nil {
		raw, err := m.RawManifest()
		if err != nil {
			return
		}
		putMeta(dir, d, raw)
	}
	if idx, ok := m.(v1.ImageIndex); ok {
		children, err := partial.Manifests(idx)
		if err != nil {
			return
		}
		for _, c := range children {
			if c, ok := c.(manifest); ok {
				keepPushed(dir, c)
			}
		}
	}
}

// group runs functions at once as an errgroup does, the first failure
// cancelling the others, but tells the first error that is not one of
// those cancellations: a blob the registry refuses cancels the uploads
// under way, one of which may be a blob another image waits for too, and
// that image's "context canceled" must not hide why.
type group struct {
	*errgroup.Group
	mu  sync.Mutex
	err error
}

func newGroup(ctx context.Context) (*group, context.Context) {
	eg, ctx := errgroup.WithContext(ctx)
	return &group{Group: eg}, ctx
}

func (g *group) Go(f func() error) {
	g.Group.Go(func() error {
		err := f()
		if err != nil {
			g.mu.Lock()
			if g.err == nil || errors.Is(g.err, context.Canceled) && !errors.Is(err, context.Canceled) {
				g.err = err
			}
			g.mu.Unlock()
		}
		return err
	})
}

func (g *group) Wait() error {
	g.Group.Wait()
	return g.err
}

// pushJobs bounds the requests one image or index sends at once, as ggcr
// does.
const pushJobs = 4

// existing is the digest ref names in its registry, zero when it names
// nothing there or the registry would not say: the answer only spares a
// write, and the write itself tells what is wrong.
func existing(ctx context.Context, q *remote.Puller, ref name.Reference) v1.Hash {
	d, err := q.Head(ctx, ref)
	if err != nil {
		return v1.Hash{}
	}
	return d.Digest
}
