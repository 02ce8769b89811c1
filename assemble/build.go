package assemble

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/layers"
	"github.com/manifold-build/manifold/registry"
)

// Options describe one build.
type Options struct {
	Context    string              // the build context directory
	Dockerfile string              // default Context/Dockerfile
	Platforms  []platform.Platform // default: the host's
	BuildArgs  map[string]string   // --build-arg
	Labels     map[string]string   // --label, set on the final image
	Target     string              // the stage to build; default the last
	Registry   registry.Options
	// Rootfs caches unpacked bases; required when a step needs files.
	Rootfs *layers.Cache
	// Secrets are what RUN --mount=type=secret mounts, by id (--secret);
	// SSH the agent sockets RUN --mount=type=ssh forwards, by id (--ssh).
	Secrets map[string]Secret
	SSH     map[string]string
	// CacheMounts is where RUN --mount=type=cache directories live, per id
	// and platform, across builds; "": in WorkDir, gone with the build.
	CacheMounts string
	// StepTimeout kills a RUN step that runs longer; 0: no limit.
	StepTimeout time.Duration
	// ContextSums is a folder where the digests of the context files that
	// builds hash are kept, with the files' stats, so that a later build
	// reads only the files that changed; "": every build reads them all.
	ContextSums string
	// WorkDir is where the build keeps its scratch files (steps' changes,
	// new layers), in a folder of its own that it removes; default the
	// system's temporary directory. It should be on a disk, not in memory.
	WorkDir string
	// MemDir is a folder on a memory file system (tmpfs: /dev/shm, see
	// IsMemory) where RUN steps write their changes while it has a GiB
	// free, instead of in WorkDir: a step that makes thousands of files
	// runs several times faster. A step that fills it runs again on disk.
	// "": every step on disk.
	MemDir string
	Runner Runner // runs RUN steps; nil: a RUN is an error
	// WalkCapture captures RUN changes by comparing trees instead of with
	// overlayfs (which is used, and falls back to this, by default).
	WalkCapture bool
	// Network is the network of RUN steps whose --network flag does not
	// say: "" or "host" (the host's), or "none".
	Network     string
	Compression layers.Compression
	// DockerMediaTypes gives stages FROM scratch Docker's manifest and layer
	// types instead of OCI's (BuildKit's oci-mediatypes=false). Stages on an
	// image always take their base's types.
	DockerMediaTypes bool
	// Epoch is SOURCE_DATE_EPOCH: it clamps file times and sets created.
	Epoch *time.Time
	// Cache keeps the steps that run and finds those that ran before (nil:
	// no local cache); CacheFrom are more caches to look in (--cache-from).
	// NoCache looks in none of them.
	Cache     *registry.LocalCache
	CacheFrom []StepCache
	NoCache   bool
	// InlineCache keeps the target stage's steps in each image's config
	// (--cache-to type=inline): the pushed image is a cache for
	// --cache-from.
	InlineCache bool
	Jobs        int      // platforms built at once; default all
	Progress    Progress // steps, their output and ends; nil: silent
}

// Result is a finished build: an image per platform and the index of them.
// Its new layers live in files until Close.
type Result struct {
	Index  v1.ImageIndex
	Images []PlatformImage
	Steps  []CachedStep // every step that may add a layer, in the order they ended
	dir    string
	// scratchGone is closed once the build's memory scratch is deleted:
	// meanwhile the result can be pushed.
	scratchGone <-chan struct{}
}

// Close removes the files of the result's new layers, once the build's
// scratch files are gone.
func (r *Result) Close() error {
	if r.scratchGone != nil {
		<-r.scratchGone
	}
	return os.RemoveAll(r.dir)
}

// PlatformImage is one platform's image of a build.
type PlatformImage struct {
	Platform v1.Platform
	Image    v1.Image
}

// Build builds the Dockerfile for every platform, in parallel, and returns
// the index in the base index's platform order.
func Build(ctx context.Context, o Options) (res *Result, err error) {
	b, err := newBuilder(o)
	if err != nil {
		return nil, err
	}
	// Images read from registries keep the context they were opened with
	// and are read again when the result is pushed: they get the build's,
	// not the per-platform group's, which ends with Build.
	b.openCtx = ctx
	defer func() {
		gone := b.cleanup(ctx, err == nil)
		if err != nil {
			<-gone // a failed build leaves nothing when it returns
		} else {
			res.scratchGone = gone
		}
	}()
	res = &Result{}
	if res.dir, err = os.MkdirTemp(o.WorkDir, "manifold-layers-"); err != nil {
		return nil, err
	}
	b.layerDir = res.dir
	plats := o.Platforms
	if len(plats) == 0 {
		plats = []platform.Platform{platform.Host()}
	}
	imgs := make([]PlatformImage, len(plats))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(o.Jobs, 1))
	if o.Jobs <= 0 {
		g.SetLimit(len(plats))
	}
	for i, p := range plats {
		g.Go(func() error {
			st, err := b.target(gctx, p)
			if err != nil {
				return err
			}
			img, err := st.image()
			if err != nil {
				return fmt.Errorf("assembling image for %s: %w", p, err)
			}
			imgs[i] = PlatformImage{Platform: st.descPlatform(), Image: img}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		res.Close()
		return nil, err
	}
	b.orderLikeBase(imgs)
	if o.InlineCache {
		if err := b.inlineCache(imgs); err != nil {
			res.Close()
			return nil, err
		}
	}
	if res.Index, err = b.index(imgs); err != nil {
		res.Close()
		return nil, err
	}
	res.Images = imgs
	for _, k := range b.order {
		res.Steps = append(res.Steps, b.done[k])
	}
	return res, nil
}

// inlineCache keeps the target stage's steps, of every platform, in each
// image's config.
func (b *builder) inlineCache(imgs []PlatformImage) error {
	var steps []registry.CacheStep
	for _, k := range b.order {
		if s := b.done[k]; s.InTarget {
			steps = append(steps, registry.CacheStep{Key: k, Step: s.Step, Layer: s.Layer})
		}
	}
	for i := range imgs {
		img, err := registry.WithInlineCache(imgs[i].Image, steps)
		if err != nil {
			return fmt.Errorf("inline cache: %w", err)
		}
		imgs[i].Image = img
	}
	return nil
}

// builder holds what the platforms of one build share.
type builder struct {
	o       Options
	df      *Dockerfile
	ctxDir  *contextDir
	workDir string

	sandbox   *sandbox
	mu        sync.Mutex
	sources   map[string]func() (*registry.Source, error)
	stages    map[string]func() (*state, error)
	steps     map[string]func() (*stepResult, error) // by cache key
	layers    map[string]func() (v1.Layer, error)    // COPY layers, by what they hold
	digests   map[string]func() (string, error)      // context files COPY reads, by sources
	downloads map[string]func() (*download, error)   // ADD URLs, fetched once
	checkouts map[string]func() (*checkout, error)   // ADD git repositories, cloned once
	done      map[string]CachedStep                  // steps of this build, by cache key
	order     []string                               // done's keys in the order the steps ended
	baseSrc   *registry.Source                       // the target stage's base, for index order and type
	catalog   layers.Catalog                         // which paths the layers read so far hold
	openCtx   context.Context
	layerDir  string // where new layers' bytes go; the Result's
}

func newBuilder(o Options) (*builder, error) {
	cd, err := openContext(o.Context)
	if err != nil {
		return nil, err
	}
	if o.Dockerfile == "" {
		o.Dockerfile = filepath.Join(o.Context, "Dockerfile")
	}
	cd.sums = openContextSums(o.ContextSums, o.Context, o.Dockerfile)
	f, err := os.Open(o.Dockerfile)
	if err != nil {
		return nil, fmt.Errorf("reading Dockerfile: %w", err)
	}
	defer f.Close()
	df, err := Parse(f, filepath.Base(o.Dockerfile))
	if err != nil {
		return nil, err
	}
	b := &builder{o: o, df: df, ctxDir: cd, sources: map[string]func() (*registry.Source, error){}, stages: map[string]func() (*state, error){},
		steps: map[string]func() (*stepResult, error){}, done: map[string]CachedStep{},
		layers: map[string]func() (v1.Layer, error){}, digests: map[string]func() (string, error){},
		downloads: map[string]func() (*download, error){}, checkouts: map[string]func() (*checkout, error){}}
	if _, err := b.targetStage(); err != nil {
		return nil, err
	}
	if err := b.checkStageRefs(); err != nil {
		return nil, err
	}
	if o.WorkDir != "" {
		if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
			return nil, err
		}
	}
	if b.workDir, err = os.MkdirTemp(o.WorkDir, "manifold-build-"); err != nil {
		return nil, err
	}
	go EmptyTrash(filepath.Dir(b.workDir)) // earlier builds'; whatever is left waits for the next
	b.sandbox = &sandbox{runner: o.Runner, rootfs: o.Rootfs, scratch: b.workDir, walk: o.WalkCapture}
	if o.Rootfs != nil {
		b.catalog.Dir = o.Rootfs.Dir // layer listings beside the unpacked layers
	}
	if o.MemDir != "" {
		if b.sandbox.mem, err = openMemScratch(o.MemDir); err != nil {
			os.RemoveAll(b.workDir)
			return nil, fmt.Errorf("memory scratch: %w", err)
		}
	}
	return b, nil
}

// cleanup sets the build's scratch files aside, in one rename: deleting
// the thousands of files a step can leave costs as much as the step, so a
// later build (or manifold prune) deletes them while it works. An
// interrupted build leaves nothing behind: it deletes them now. The memory
// scratch, whose files hold memory, is deleted on a goroutine of its own
// (while the result is pushed), which then, for a build that built, keeps
// the context's file sums: the channel is closed once it is done.
func (b *builder) cleanup(ctx context.Context, built bool) <-chan struct{} {
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		b.sandbox.mem.close()
		if built {
			b.ctxDir.sums.save()
		}
	}()
	if ctx.Err() != nil {
		os.RemoveAll(b.workDir)
		return gone
	}
	trash := filepath.Join(filepath.Dir(b.workDir), trashPrefix+filepath.Base(b.workDir))
	if os.Rename(b.workDir, trash) != nil {
		os.RemoveAll(b.workDir)
	}
	return gone
}

// trashPrefix names scratch folders of finished builds, waiting to be
// deleted.
const trashPrefix = ".trash-"

// EmptyTrash deletes the scratch folders that finished builds set aside in
// dir. It runs at the lowest CPU priority, on a thread of its own that ends
// with it, so that it takes what the build leaves.
func EmptyTrash(dir string) {
	runtime.LockOSThread() // never unlocked: the thread, and its priority, go with the goroutine
	unix.Setpriority(unix.PRIO_PROCESS, 0, 19)
	old, _ := filepath.Glob(filepath.Join(dir, trashPrefix+"*"))
	for _, d := range old {
		removeAll(d)
	}
}

// now is the time a step that runs is said to be created at.
func (b *builder) now() time.Time {
	if b.o.Epoch != nil {
		return b.o.Epoch.UTC()
	}
	return time.Now().UTC().Truncate(time.Second)
}

func (b *builder) targetStage() (*Stage, error) {
	if b.o.Target == "" {
		return b.df.Stages[len(b.df.Stages)-1], nil
	}
	if st := b.df.stageByName(b.o.Target); st != nil {
		return st, nil
	}
	return nil, fmt.Errorf("target stage %q not found in %s", b.o.Target, b.df.Name)
}

func (df *Dockerfile) stageByName(n string) *Stage {
	n = strings.ToLower(n)
	for _, st := range df.Stages {
		if st.Name == n {
			return st
		}
	}
	return nil
}

func (b *builder) target(ctx context.Context, p platform.Platform) (*state, error) {
	st, _ := b.targetStage()
	return b.stage(ctx, st, p)
}

// source looks a base reference up once per build, for every platform.
func (b *builder) source(ctx context.Context, ref string) (*registry.Source, error) {
	src, err := shared(b, b.sources, ref, func() (*registry.Source, error) { return registry.Open(b.openCtx, ref, b.o.Registry) })
	if err == nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return src, err
}

// orderLikeBase puts the images in the order their platforms have in the
// target stage's base index; platforms it lacks keep the user's order.
func (b *builder) orderLikeBase(imgs []PlatformImage) {
	if b.baseSrc == nil {
		return
	}
	ms, err := b.baseSrc.Manifests()
	if err != nil || len(ms) == 0 {
		return
	}
	rank := func(p v1.Platform) int {
		for i, d := range ms {
			if platform.FromOCI(p) == platform.FromOCI(*d.Platform) {
				return i
			}
		}
		return len(ms)
	}
	slices.SortStableFunc(imgs, func(a, c PlatformImage) int { return rank(a.Platform) - rank(c.Platform) })
}

// index builds the manifest list: of the base index's type when the target
// stage's base is an index, else Docker's for Docker images and OCI's
// otherwise.
func (b *builder) index(imgs []PlatformImage) (v1.ImageIndex, error) {
	idxType := types.OCIImageIndex
	if b.baseSrc != nil && b.baseSrc.Index != nil {
		mt, err := b.baseSrc.Index.MediaType()
		if err != nil {
			return nil, err
		}
		idxType = mt
	} else if len(imgs) > 0 {
		mt, err := imgs[0].Image.MediaType()
		if err != nil {
			return nil, err
		}
		if mt == types.DockerManifestSchema2 {
			idxType = types.DockerManifestList
		}
	}
	var adds []mutate.IndexAddendum
	for _, pi := range imgs {
		mt, err := pi.Image.MediaType()
		if err != nil {
			return nil, err
		}
		p := pi.Platform
		adds = append(adds, mutate.IndexAddendum{Add: pi.Image, Descriptor: v1.Descriptor{MediaType: mt, Platform: &p}})
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, idxType), adds...), nil
}
