package assemble_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/emulate"
	"github.com/manifold-build/manifold/registry"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// cacheBuild builds with a local cache in dir and a runner that counts what
// ran, and returns what ran and the layer digests of each platform.
func cacheBuild(t *testing.T, ctxDir, dir string, plats []string, mod func(*assemble.Options)) ([]run, map[string][]string) {
	t.Helper()
	cr := &countingRunner{Runner: &emulate.Sandbox{}}
	res := mustBuild(t, ctxDir, plats, func(o *assemble.Options) {
		o.Runner = cr
		o.Cache = &registry.LocalCache{Dir: dir, Max: registry.DefaultCacheSize}
		o.ContextSums = filepath.Join(dir, "context")
		if mod != nil {
			mod(o)
		}
	})
	layers := map[string][]string{}
	for _, pi := range res.Images {
		layers[pi.Platform.Architecture] = digests(t, pi.Image)
	}
	return cr.runs, layers
}

func commands(runs []run) []string {
	var out []string
	for _, r := range runs {
		out = append(out, r.platform+" "+r.cmd[strings.LastIndex(r.cmd, " ")+1:])
	}
	slices.Sort(out)
	return out
}

// A second build with the local cache runs nothing (the RUN writes a random
// value, and its layer is the same), a changed input misses exactly from
// the step that reads it on, and an unused or ignored input misses
// nothing.
func TestLocalCacheHitsAndExactMisses(t *testing.T) {
	defer assemble.SetSettled(0)() // the context's sums are kept however new its files are
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64", "linux/s390x")
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile": fmt.Sprintf(`FROM %s
RUN head -c 16 /dev/urandom | od -An -tx1 > /random # first
COPY a.txt /a.txt
RUN cat /a.txt /random > /second # second
ARG USED
RUN echo "$USED" > /third # third
COPY b.txt /b.txt
`, base),
		"a.txt": "a\n", "b.txt": "b\n", "ignored.txt": "x\n", ".dockerignore": "ignored.txt\n",
	})
	dir := t.TempDir()
	plats := []string{"linux/amd64", "linux/arm64"}
	args := func(used, unused string) func(*assemble.Options) {
		return func(o *assemble.Options) { o.BuildArgs = map[string]string{"USED": used, "UNUSED": unused} }
	}
	ran, first := cacheBuild(t, ctxDir, dir, plats, args("1", "1"))
	if len(ran) != 6 {
		t.Fatalf("first build ran %v, want 3 steps on 2 platforms", commands(ran))
	}
	for _, tc := range []struct {
		name   string
		change func()
		args   func(*assemble.Options)
		want   []string
	}{
		{"warm", func() {}, args("1", "1"), nil},
		{"unused build arg", func() {}, args("1", "2"), nil},
		{"ignored file", func() { os.WriteFile(filepath.Join(ctxDir, "ignored.txt"), []byte("y\n"), 0o644) }, args("1", "2"), nil},
		{"Dockerfile comment", func() {
			df, _ := os.ReadFile(filepath.Join(ctxDir, "Dockerfile"))
			os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("# a comment\n"+string(df)), 0o644)
		}, args("1", "2"), nil},
		{"used build arg", func() {}, args("2", "2"), []string{"linux/amd64 third", "linux/arm64 third"}},
		{"last file", func() { os.WriteFile(filepath.Join(ctxDir, "b.txt"), []byte("b2\n"), 0o644) }, args("2", "2"), nil},
		{"first file", func() { os.WriteFile(filepath.Join(ctxDir, "a.txt"), []byte("a2\n"), 0o644) }, args("2", "2"),
			[]string{"linux/amd64 second", "linux/amd64 third", "linux/arm64 second", "linux/arm64 third"}},
		{"first file, its size and time kept", func() {
			p := filepath.Join(ctxDir, "a.txt")
			fi, _ := os.Stat(p)
			os.WriteFile(p, []byte("a3\n"), 0o644)
			os.Chtimes(p, fi.ModTime(), fi.ModTime())
		}, args("2", "2"),
			[]string{"linux/amd64 second", "linux/amd64 third", "linux/arm64 second", "linux/arm64 third"}},
	} {
		tc.change()
		ran, got := cacheBuild(t, ctxDir, dir, plats, tc.args)
		if !slices.Equal(commands(ran), tc.want) {
			t.Errorf("%s: ran %v, want %v", tc.name, commands(ran), tc.want)
		}
		if tc.name == "warm" && fmt.Sprint(got) != fmt.Sprint(first) {
			t.Errorf("warm build layers %v, want the first build's %v", got, first)
		}
	}
	ran, _ = cacheBuild(t, ctxDir, dir, []string{"linux/amd64", "linux/arm64", "linux/s390x"}, args("2", "2"))
	if want := []string{"linux/s390x first", "linux/s390x second", "linux/s390x third"}; !slices.Equal(commands(ran), want) {
		t.Errorf("a platform added: ran %v, want %v", commands(ran), want)
	}
	ran, _ = cacheBuild(t, ctxDir, dir, plats, func(o *assemble.Options) { args("2", "2")(o); o.NoCache = true })
	if len(ran) != 6 {
		t.Errorf("--no-cache ran %v, want every step", commands(ran))
	}
}

// The Go cross-compile pattern: in a --platform=$BUILDPLATFORM stage, the
// steps before ARG TARGETARCH run once for every target, those after it
// once per target.
func TestStepsBeforeTargetArgsAreShared(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64", "linux/s390x")
	ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf(`FROM --platform=$BUILDPLATFORM %[1]s AS build
RUN echo toolchain > /toolchain # toolchain
ARG TARGETARCH
RUN echo "$TARGETARCH" > /out # compile
FROM %[1]s
COPY --from=build /out /out
`, base)})
	ran, _ := cacheBuild(t, ctxDir, t.TempDir(), []string{"linux/amd64", "linux/arm64", "linux/s390x"}, nil)
	want := []string{"linux/amd64 compile", "linux/amd64 compile", "linux/amd64 compile", "linux/amd64 toolchain"}
	if !slices.Equal(commands(ran), want) {
		t.Errorf("ran %v, want %v", commands(ran), want)
	}
}

// Two builds of one Dockerfile at once share the local cache safely: both
// succeed with the same layers, and a third build runs nothing.
func TestConcurrentBuildsShareTheCache(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf("FROM %s\nRUN seq 1 500 > /numbers\nCOPY Dockerfile /\n", base)})
	dir := t.TempDir()
	plats := []string{"linux/amd64", "linux/arm64"}
	var wg sync.WaitGroup
	got := make([]map[string][]string, 2)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, got[i] = cacheBuild(t, ctxDir, dir, plats, nil)
		}()
	}
	wg.Wait()
	if fmt.Sprint(got[0]) != fmt.Sprint(got[1]) {
		t.Errorf("concurrent builds differ: %v and %v", got[0], got[1])
	}
	if ran, _ := cacheBuild(t, ctxDir, dir, plats, nil); len(ran) != 0 {
		t.Errorf("a build after them ran %v", commands(ran))
	}
}

// A cached layer whose bytes were damaged is found out and made again.
func TestCorruptCacheEntryIsRebuilt(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64")
	ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf("FROM %s\nRUN seq 1 1000 > /numbers\n", base)})
	dir := t.TempDir()
	_, first := cacheBuild(t, ctxDir, dir, []string{"linux/amd64"}, nil)
	blobs, _ := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	if len(blobs) != 1 {
		t.Fatalf("the cache holds %d layers, want 1", len(blobs))
	}
	for _, damage := range []func(string){
		func(p string) { os.Truncate(p, 10) },
		func(p string) {
			data, _ := os.ReadFile(p)
			data[len(data)/2] ^= 0xff
			os.WriteFile(p, data, 0o644)
		},
	} {
		damage(blobs[0])
		ran, got := cacheBuild(t, ctxDir, dir, []string{"linux/amd64"}, nil)
		if len(ran) != 1 || fmt.Sprint(got) != fmt.Sprint(first) {
			t.Errorf("after damage: ran %v, layers %v; want the step run again and %v", commands(ran), got, first)
		}
	}
}

// The fresh CI runner: a build pushes its image and exports its steps to a
// registry cache; a build on an empty runner (no local cache, no unpacked
// base) with --cache-from runs nothing, fetches no layer and uploads no
// layer: only configs, manifests and the index. A changed file runs only
// the steps from its COPY on, and uploads only their layers.
func TestFreshRunnerWithRegistryCache(t *testing.T) {
	host, log := registrytest.Distribution(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile": fmt.Sprintf("FROM %s\nRUN head -c 16 /dev/urandom | od -An -tx1 > /random # first\nCOPY a.txt /a.txt\nRUN cat /a.txt /random > /second # second\n", base),
		"a.txt":      "a\n",
	})
	plats := []string{"linux/amd64", "linux/arm64"}
	cacheRef := registry.CacheRef{Ref: host + "/ci/cache:main"}
	firstRan, first := freshRunnerBuild(t, ctxDir, plats, nil, host+"/ci/app:1")
	if len(firstRan) != 4 {
		t.Fatalf("the first build ran %v", commands(firstRan))
	}
	cached, err := registry.OpenCache(context.Background(), cacheRef, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log.Reset()
	ran, second := freshRunnerBuild(t, ctxDir, plats, cached, host+"/ci/app:2")
	if len(ran) != 0 {
		t.Errorf("the fresh runner ran %v, want nothing", commands(ran))
	}
	if fmt.Sprint(second) != fmt.Sprint(first) {
		t.Errorf("the fresh runner's layers %v, want the first build's %v", second, first)
	}
	for _, ds := range second {
		for _, d := range ds {
			if g, u := log.BlobGets(d), log.Uploads(d); g != 0 || u != 0 {
				t.Errorf("layer %s: %d GETs and %d uploads on the fresh runner, want none", d, g, u)
			}
		}
	}
	os.WriteFile(filepath.Join(ctxDir, "a.txt"), []byte("changed\n"), 0o644)
	log.Reset()
	ran, third := freshRunnerBuild(t, ctxDir, plats, cached, host+"/ci/app:3")
	if want := []string{"linux/amd64 second", "linux/arm64 second"}; !slices.Equal(commands(ran), want) {
		t.Errorf("after a change the fresh runner ran %v, want %v", commands(ran), want)
	}
	for arch, ds := range third {
		for i, d := range ds {
			changed := i >= len(ds)-2 // the COPY's layer and the RUN's after it
			if u := log.Uploads(d); (u == 1) != changed {
				t.Errorf("%s layer %d (%s) uploaded %d times; changed: %v", arch, i, d, u, changed)
			}
		}
	}
}

// freshRunnerBuild builds with an empty local cache and the given imported
// one, pushes to tag, and exports every step to the registry cache.
func freshRunnerBuild(t *testing.T, ctxDir string, plats []string, from *registry.ImportedCache, tag string) ([]run, map[string][]string) {
	t.Helper()
	cr := &countingRunner{Runner: &emulate.Sandbox{}}
	res := mustBuildUnread(t, ctxDir, plats, func(o *assemble.Options) {
		o.Runner = cr
		o.Cache = &registry.LocalCache{Dir: t.TempDir()}
		if from != nil {
			o.CacheFrom = []assemble.StepCache{from}
		}
	})
	push(t, res, tag)
	var steps []registry.CacheStep
	for _, s := range res.Steps {
		steps = append(steps, registry.CacheStep{Key: s.Key, Step: s.Step, Layer: s.Layer})
	}
	cacheRef := registry.CacheRef{Ref: strings.Split(tag, "/")[0] + "/ci/cache:main"}
	if err := registry.ExportCache(context.Background(), cacheRef, steps, ref(t, tag), registry.Options{}); err != nil {
		t.Fatalf("exporting the cache: %v", err)
	}
	layers := map[string][]string{}
	for _, pi := range res.Images {
		layers[pi.Platform.Architecture] = digests(t, pi.Image)
	}
	return cr.runs, layers
}

// Without SOURCE_DATE_EPOCH, a rebuild from the cache is the same image, as
// in BuildKit: a step's history time is when it ran, kept in the cache, and
// config-only steps and the image take the newest layer's time.
func TestWarmRebuildIsTheSameImage(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf("FROM %s\nENV A=1\nRUN date > /when\nLABEL b=2\n", base)})
	dir := t.TempDir()
	var digests []string
	for range 2 {
		res := mustBuild(t, ctxDir, []string{"linux/amd64", "linux/arm64"}, func(o *assemble.Options) {
			o.Epoch = nil
			o.Runner = &emulate.Sandbox{}
			o.Cache = &registry.LocalCache{Dir: dir}
		})
		d, err := res.Index.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d.String())
		time.Sleep(1100 * time.Millisecond) // a rebuild in another second
	}
	if digests[0] != digests[1] {
		t.Errorf("a rebuild from the cache gave %s, the first build %s", digests[1], digests[0])
	}
}

// A step after a cached one that deleted files sees them deleted: the
// cached layer's whiteouts hold when the stage is unpacked for a miss.
func TestMissAfterCachedDeletion(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64")
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile": fmt.Sprintf("FROM %s\nRUN rm /etc/group && rm -rf /root && mkdir /root && touch /root/new\nCOPY x.txt /\nRUN test ! -e /etc/group && ls -A /root > /seen\n", base),
		"x.txt":      "1\n",
	})
	dir := t.TempDir()
	cacheBuild(t, ctxDir, dir, []string{"linux/amd64"}, nil)
	os.WriteFile(filepath.Join(ctxDir, "x.txt"), []byte("2\n"), 0o644)
	ran, _ := cacheBuild(t, ctxDir, dir, []string{"linux/amd64"}, nil)
	if len(ran) != 1 {
		t.Errorf("ran %v, want only the last RUN", commands(ran))
	}
}

// --cache-to type=inline: the pushed images keep the target stage's steps
// in their configs, and a build on an empty runner with the image itself
// as --cache-from runs nothing, fetches no layer and uploads no layer, for
// both platforms, into another repository too (its layers are mounted).
func TestFreshRunnerWithInlineCache(t *testing.T) {
	host, log := registrytest.Distribution(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile": fmt.Sprintf("FROM %s\nRUN head -c 16 /dev/urandom | od -An -tx1 > /random # first\nCOPY a.txt /a.txt\n", base),
		"a.txt":      "a\n",
	})
	plats := []string{"linux/amd64", "linux/arm64"}
	build := func(from *registry.ImportedCache, tag string) ([]run, *assemble.Result) {
		cr := &countingRunner{Runner: &emulate.Sandbox{}}
		res := mustBuildUnread(t, ctxDir, plats, func(o *assemble.Options) {
			o.Runner = cr
			o.Cache = &registry.LocalCache{Dir: t.TempDir()}
			o.InlineCache = true
			if from != nil {
				o.CacheFrom = []assemble.StepCache{from}
			}
		})
		push(t, res, tag)
		return cr.runs, res
	}
	ran, first := build(nil, host+"/ci/inline:1")
	if len(ran) != 2 {
		t.Fatalf("the first build ran %v", commands(ran))
	}
	cached, err := registry.OpenCache(context.Background(), registry.CacheRef{Ref: host + "/ci/inline:1"}, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log.Reset()
	ran, second := build(cached, host+"/ci/other:1")
	if len(ran) != 0 {
		t.Errorf("the fresh runner ran %v, want nothing", commands(ran))
	}
	d1, _ := first.Index.Digest()
	if d2, _ := second.Index.Digest(); d1 != d2 {
		t.Errorf("index %s from the inline cache, want the first build's %s", d2, d1)
	}
	for _, pi := range second.Images {
		for _, d := range digests(t, pi.Image) {
			if g, u := log.BlobGets(d), log.Uploads(d); g != 0 || u != 0 {
				t.Errorf("layer %s: %d GETs and %d uploads on the fresh runner, want none", d, g, u)
			}
		}
	}
	assembletest.Validate(t, second)

	// An image without an inline cache is a warning's worth, not a cache.
	_, err = registry.OpenCache(context.Background(), registry.CacheRef{Ref: base.String()}, registry.Options{})
	if !errors.Is(err, registry.ErrNoCache) {
		t.Errorf("--cache-from an image without an inline cache: %v, want ErrNoCache", err)
	}
}
