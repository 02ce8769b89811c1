package assemble

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/manifold-build/manifold/registry"
)

// StepCache finds build steps by their cache key. *registry.LocalCache is
// one; so is a cache imported from a registry or a directory.
type StepCache interface {
	Get(key string) (*registry.Step, v1.Layer, bool)
}

// CachedStep is a step of a build with its key, for exporting a cache:
// InTarget says the step belongs to the target stage (what mode=min
// keeps).
type CachedStep struct {
	Key      string
	Step     registry.Step
	Layer    v1.Layer // nil: the step added no layer
	InTarget bool
}

// key digests what a step's result depends on, after its parent's key: the
// same inputs give the same key on any machine. Parts are JSON-encoded.
func key(parent string, parts ...any) string {
	h := sha256.New()
	json.NewEncoder(h).Encode(append([]any{"manifold-step-v1", parent}, parts...))
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// stepResult is what a step that can add a layer produced.
type stepResult struct {
	layer     v1.Layer // nil: no layer
	createdBy string
	created   time.Time  // when the step ran, here or where it was cached
	files     *stepFiles // the step's files on disk, when it ran here
	cached    bool       // found in a cache, not run
}

// cached runs a step that may add a layer, unless its key is known: in this
// build (platforms and targets that reach one key share one run, even at
// the same time), in the local cache, or in a cache imported with
// --cache-from. A hit reads and unpacks nothing; only a later step that
// needs the stage's files does.
func (s *state) cached(key string, in *Instruction, make func() (*stepResult, error)) error {
	res, err := s.b.step(key, func() (*stepResult, error) {
		if r, ok := s.b.lookup(key); ok {
			return r, nil
		}
		r, err := make()
		if err != nil {
			return nil, err
		}
		r.created = s.b.now()
		s.b.store(key, r)
		return r, nil
	})
	if err != nil {
		return err
	}
	s.b.remember(key, res, s.isTarget())
	if res.cached {
		s.out().Cached()
	}
	s.apply(key, in, res)
	return nil
}

// apply adds a step's result to the stage.
func (s *state) apply(key string, in *Instruction, res *stepResult) {
	s.key, s.clock = key, res.created
	if res.layer == nil {
		s.record(in, res.createdBy, true, s.created())
		return
	}
	current := s.unpacked()
	s.addLayer(in, res.layer, res.createdBy, s.created())
	switch {
	case res.files == nil || !current:
		// unpacked when a later step needs the files
	case res.files.whole:
		s.dirs, s.dirLayers = []string{res.files.dir}, len(s.layers)
	default:
		s.dirs, s.dirLayers = append(s.dirs, res.files.dir), len(s.layers)
	}
}

// shared calls make once per key for the whole build: the platforms and
// targets that ask for one key, even at the same time, share its result.
func shared[T any](b *builder, m map[string]func() (T, error), key string, make func() (T, error)) (T, error) {
	b.mu.Lock()
	once := m[key]
	if once == nil {
		once = sync.OnceValues(make)
		m[key] = once
	}
	b.mu.Unlock()
	return once()
}

// layer makes a layer once per build for each content key.
func (b *builder) layer(key string, make func() (v1.Layer, error)) (v1.Layer, error) {
	return shared(b, b.layers, key, make)
}

// step shares one run of each key among the platforms of a build.
func (b *builder) step(key string, run func() (*stepResult, error)) (*stepResult, error) {
	return shared(b, b.steps, key, run)
}

func (b *builder) lookup(key string) (*stepResult, bool) {
	if b.o.NoCache {
		return nil, false
	}
	caches := b.o.CacheFrom
	if b.o.Cache != nil {
		caches = append([]StepCache{b.o.Cache}, caches...)
	}
	for _, c := range caches {
		if st, l, ok := c.Get(key); ok {
			return &stepResult{layer: l, createdBy: st.CreatedBy, created: st.Created, cached: true}, true
		}
	}
	return nil, false
}

// store keeps a step that ran in the local cache. A cache that cannot take
// it costs the next build time, not this one its result.
func (b *builder) store(key string, r *stepResult) {
	if b.o.Cache == nil {
		return
	}
	if err := b.o.Cache.Put(key, registry.Step{CreatedBy: r.createdBy, Created: r.created}, r.layer); err != nil && b.o.Progress != nil {
		b.o.Progress.Warn("caching a step: " + err.Error())
	}
}

// remember notes a step of the build, for --cache-to.
func (b *builder) remember(key string, r *stepResult, inTarget bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.done[key]; ok {
		old.InTarget = old.InTarget || inTarget
		b.done[key] = old
		return
	}
	b.done[key] = CachedStep{Key: key, Step: registry.Step{CreatedBy: r.createdBy, Created: r.created}, Layer: r.layer, InTarget: inTarget}
	b.order = append(b.order, key)
}
