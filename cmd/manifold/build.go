package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/layers"
)

type buildFlags struct {
	file, target, progress, metadata, cacheDir, compression, memDir string
	platforms, tags, outputs, buildArgs, labels                     []string
	secrets, ssh                                                    []string
	push                                                            bool
	jobs                                                            int
	stepTimeout                                                     time.Duration
	network                                                         string
	sandbox                                                         sandboxFlags
	cache                                                           cacheFlags
	registry                                                        registryFlags
}

func runBuild(ctx context.Context, args []string, out, errOut io.Writer) error {
	var f buildFlags
	fs := flagSet("build", "[flags] CONTEXT", errOut)
	fs.StringVarP(&f.file, "file", "f", "", "the Dockerfile (default CONTEXT/Dockerfile)")
	fs.StringSliceVar(&f.platforms, "platform", nil, "platforms to build, e.g. linux/amd64,linux/arm64 (default: the host's)")
	fs.StringArrayVarP(&f.tags, "tag", "t", nil, "name the result, e.g. registry.example/app:1.0 (repeatable); @FILE or @- reads names one per line, as manifold tags prints them")
	fs.BoolVar(&f.push, "push", false, "push the result to the registry of each tag")
	fs.StringArrayVarP(&f.outputs, "output", "o", nil, "write the result: type=oci-layout,dest=DIR | type=oci,dest=FILE.tar | type=registry; add oci-mediatypes=false for Docker media types on images FROM scratch")
	fs.StringArrayVar(&f.buildArgs, "build-arg", nil, "set a build argument: NAME=VALUE, or NAME to take it from the environment")
	fs.StringArrayVar(&f.labels, "label", nil, "set a label on the image: KEY=VALUE")
	fs.StringArrayVar(&f.secrets, "secret", nil, "a secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VARIABLE (repeatable)")
	fs.StringArrayVar(&f.ssh, "ssh", nil, "an SSH agent for RUN --mount=type=ssh: default, or ID=SOCKET (repeatable)")
	fs.StringVar(&f.target, "target", "", "build this stage and what it needs (default: the last stage)")
	fs.IntVar(&f.jobs, "jobs", 0, "platforms built at once (default: all)")
	fs.DurationVar(&f.stepTimeout, "step-timeout", 0, "kill a RUN step that runs longer, e.g. 30m (default: no limit)")
	fs.StringVar(&f.progress, "progress", "auto", "progress output: auto (tty on a terminal, else plain), plain (BuildKit's), tty, rawjson or quiet (the digest only)")
	fs.StringVar(&f.metadata, "metadata-file", "", "write the result's digest and names as JSON to this file")
	f.registry.register(fs)
	fs.StringVar(&f.cacheDir, "cache-dir", defaultCacheDir(), "where unpacked base images and the build's scratch files are kept")
	fs.StringVar(&f.compression, "compression", "gzip", "layer compression: gzip or zstd")
	fs.StringVar(&f.memDir, "memory-scratch", defaultMemDir(), "a folder on a memory file system (tmpfs) where RUN steps write their changes while it has a GiB free, several times faster than a disk; \"\" keeps them on disk")
	fs.StringVar(&f.network, "network", "default", "network of RUN steps without --network: default or host (the host's), or none (loopback only)")
	f.sandbox.register(fs)
	f.cache.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("build takes exactly one CONTEXT directory, got %d arguments", fs.NArg())
	}
	o, dest, err := f.options(fs.Arg(0), errOut)
	if err != nil {
		return err
	}
	display, err := newProgress(f.progress, errOut)
	if err != nil {
		return err
	}
	var status io.Writer = io.Discard
	if display != nil {
		o.Progress = display
		defer display.close()
		status = warnings{display}
	}
	exports, err := f.cache.options(ctx, &o, f.cacheDir, status)
	if err != nil {
		return err
	}
	dest.prepare(ctx, o.Registry)
	res, err := assemble.Build(ctx, o)
	if err != nil {
		return err
	}
	defer res.Close()
	if o.Cache != nil && o.Cache.Max > 0 {
		// Cache mounts share the cache's bound with the steps, which go first.
		used, _ := o.Cache.Size()
		assemble.PruneCacheMounts(o.CacheMounts, max(o.Cache.Max-used, 0))
	}
	step := assemble.Unwatched // --progress quiet
	if display != nil {
		step = display.Step("exporting to image")
		o.Registry.OnProgress = pushProgress(step)
	}
	if err := dest.write(ctx, res, o.Registry, f.metadata, out, step); err != nil {
		step.Done(err)
		return err
	}
	var pushed []name.Reference
	if dest.push {
		pushed = dest.tags
	}
	err = export(ctx, exports, res, pushed, o.Registry, step)
	step.Done(err)
	return err
}

// warnings turns lines written to it into the display's warnings.
type warnings struct{ p assemble.Progress }

func (w warnings) Write(b []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		w.p.Warn(strings.TrimPrefix(line, "warning: "))
	}
	return len(b), nil
}

// pushProgress writes a push's bytes to step, a line a second at most and
// the last one always.
func pushProgress(step io.Writer) func(complete, total int64) {
	var mu sync.Mutex
	var last time.Time
	var told int64
	return func(complete, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if complete == told || time.Since(last) < time.Second && complete < total {
			return
		}
		last, told = time.Now(), complete
		fmt.Fprintf(step, "pushing layers %s / %s\n", humanBytes(complete), humanBytes(total))
	}
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

func (f *buildFlags) options(contextDir string, errOut io.Writer) (assemble.Options, *destination, error) {
	var o assemble.Options
	plats, err := platform.ParseList(f.platforms)
	if err != nil {
		return o, nil, usageError{err}
	}
	args, err := keyValues(f.buildArgs, "--build-arg", true)
	if err != nil {
		return o, nil, err
	}
	labels, err := keyValues(f.labels, "--label", false)
	if err != nil {
		return o, nil, err
	}
	epoch, err := sourceDateEpoch(args)
	if err != nil {
		return o, nil, usageError{err}
	}
	comp := layers.Compression(f.compression)
	if comp != layers.Gzip && comp != layers.Zstd {
		return o, nil, usagef("--compression must be gzip or zstd, not %q", f.compression)
	}
	network, err := networkFlag(f.network)
	if err != nil {
		return o, nil, err
	}
	runner, err := f.sandbox.sandbox()
	if err != nil {
		return o, nil, err
	}
	ro, err := f.registry.options()
	if err != nil {
		return o, nil, err
	}
	ro.MetaDir = filepath.Join(f.cacheDir, "meta") // base manifests and configs, by digest
	dest, err := f.destination(ro)
	if err != nil {
		return o, nil, err
	}
	o = assemble.Options{
		Context: contextDir, Dockerfile: f.file, Platforms: plats, BuildArgs: args,
		Labels: labels, Target: f.target, Registry: ro, Compression: comp, Epoch: epoch,
		Jobs: f.jobs, StepTimeout: f.stepTimeout, DockerMediaTypes: dest.dockerTypes, Runner: runner, Network: network,
		WorkDir:     filepath.Join(f.cacheDir, "tmp"),
		Rootfs:      &layers.Cache{Dir: filepath.Join(f.cacheDir, "rootfs")},
		CacheMounts: filepath.Join(f.cacheDir, "mounts"),
		ContextSums: filepath.Join(f.cacheDir, "context"),
		MemDir:      f.memDir,
	}
	if o.Secrets, err = secrets(f.secrets); err != nil {
		return o, nil, err
	}
	if o.SSH, err = sshAgents(f.ssh); err != nil {
		return o, nil, err
	}
	return o, dest, nil
}

// keyValues reads NAME=VALUE flags; with fromEnv, a bare NAME takes its value
// from the environment, as docker build does.
func keyValues(list []string, flag string, fromEnv bool) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok && fromEnv {
			v, ok = os.LookupEnv(k)
			if !ok {
				continue
			}
		}
		if !ok || k == "" {
			return nil, usagef("%s wants KEY=VALUE, not %q", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH from the build args or, as BuildKit
// does, the environment.
func sourceDateEpoch(args map[string]string) (*time.Time, error) {
	v, ok := args["SOURCE_DATE_EPOCH"]
	if !ok {
		v, ok = os.LookupEnv("SOURCE_DATE_EPOCH")
	}
	if !ok || v == "" {
		return nil, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("SOURCE_DATE_EPOCH must be whole seconds, not %q", v)
	}
	t := time.Unix(n, 0).UTC()
	return &t, nil
}

// defaultCacheDir is $XDG_CACHE_HOME/manifold, else ~/.cache/manifold.
func defaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "manifold")
	}
	return filepath.Join(os.TempDir(), "manifold-cache")
}

// metadataFile is what --metadata-file writes, in buildx's keys.
type metadataFile struct {
	Digest string `json:"containerimage.digest"`
	Name   string `json:"image.name,omitempty"`
}

func writeMetadata(file, digest string, tags []name.Reference) error {
	var names []string
	for _, t := range tags {
		names = append(names, t.Name())
	}
	b, err := json.MarshalIndent(metadataFile{Digest: digest, Name: strings.Join(names, ",")}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(b, '\n'), 0o644)
}

// defaultMemDir is /dev/shm where it is a memory file system this process
// can write to, else "".
func defaultMemDir() string {
	if assemble.IsMemory("/dev/shm") {
		return "/dev/shm"
	}
	return ""
}
