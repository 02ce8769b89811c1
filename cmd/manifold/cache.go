package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/pflag"

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/registry"
)

// cacheFlags are build's cache flags, in buildx's terms.
type cacheFlags struct {
	from, to []string
	noCache  bool
	size     string
}

func (c *cacheFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&c.from, "cache-from", nil, "also look for steps in this cache: type=registry,ref=REF | type=local,src=DIR | REF (repeatable)")
	fs.StringArrayVar(&c.to, "cache-to", nil, "export the build's steps: type=registry,ref=REF[,mode=min|max] | type=local,dest=DIR[,mode=min|max] | type=inline (in the pushed image's config, for --cache-from IMAGE) (repeatable)")
	fs.BoolVar(&c.noCache, "no-cache", false, "run every step: look in no cache (the local one still learns the steps)")
	fs.StringVar(&c.size, "cache-size", "", "bound of the local step cache, e.g. 4GiB or 500MB; 0 for none (default $MANIFOLD_CACHE_SIZE, else 4GiB)")
}

// cacheExport is one --cache-to.
type cacheExport struct {
	ref registry.CacheRef
	max bool // mode=max: every stage's steps, not just the target's
}

// options fills in the build's caches: the local one under cacheDir, and
// those --cache-from names (a missing one is a warning, not a failure).
func (c *cacheFlags) options(ctx context.Context, o *assemble.Options, cacheDir string, errOut io.Writer) ([]cacheExport, error) {
	size, err := c.bound()
	if err != nil {
		return nil, err
	}
	o.Cache = &registry.LocalCache{Dir: filepath.Join(cacheDir, "steps"), Max: size}
	if o.Rootfs != nil {
		o.Rootfs.Max = size // the steps' unpacked layers, kept as snapshots
	}
	o.NoCache = c.noCache
	var exports []cacheExport
	for _, spec := range c.to {
		if spec == "type=inline" || strings.HasPrefix(spec, "type=inline,") {
			o.InlineCache = true // the pushed image is the cache
			continue
		}
		ref, kv, err := parseCacheSpec(spec, "dest")
		if err != nil {
			return nil, err
		}
		if m := kv["mode"]; m != "" && m != "min" && m != "max" {
			return nil, usagef("--cache-to mode must be min or max, not %q", m)
		}
		exports = append(exports, cacheExport{ref: ref, max: kv["mode"] == "max"})
	}
	for _, spec := range c.from {
		ref, _, err := parseCacheSpec(spec, "src")
		if err != nil {
			return nil, err
		}
		imported, err := registry.OpenCache(ctx, ref, o.Registry)
		if errors.Is(err, registry.ErrNoCache) {
			fmt.Fprintf(errOut, "warning: --cache-from %s: %v\n", ref, err)
			continue
		}
		if err != nil {
			return nil, err
		}
		o.CacheFrom = append(o.CacheFrom, imported)
	}
	return exports, nil
}

func (c *cacheFlags) bound() (int64, error) {
	s := c.size
	if s == "" {
		s = os.Getenv("MANIFOLD_CACHE_SIZE")
	}
	if s == "" {
		return registry.DefaultCacheSize, nil
	}
	n, err := parseSize(s)
	if err != nil {
		return 0, usagef("--cache-size: %v", err)
	}
	return n, nil
}

// parseCacheSpec reads buildx's type=...,ref=... form (a bare reference is
// type=registry); dirKey is where type=local names its directory.
func parseCacheSpec(spec, dirKey string) (registry.CacheRef, map[string]string, error) {
	kv := map[string]string{}
	if !strings.Contains(spec, "=") {
		kv["type"], kv["ref"] = "registry", spec
	}
	for _, part := range strings.Split(spec, ",") {
		if k, v, ok := strings.Cut(part, "="); ok {
			kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	switch kv["type"] {
	case "registry":
		if kv["ref"] == "" {
			return registry.CacheRef{}, nil, usagef("cache %q: type=registry needs ref=REF", spec)
		}
		return registry.CacheRef{Ref: kv["ref"]}, kv, nil
	case "local":
		if kv[dirKey] == "" {
			return registry.CacheRef{}, nil, usagef("cache %q: type=local needs %s=DIR", spec, dirKey)
		}
		return registry.CacheRef{Dir: kv[dirKey]}, kv, nil
	case "gha", "s3", "azblob":
		return registry.CacheRef{}, nil, usagef("cache type=%s is not supported by manifold (use type=registry or type=local)", kv["type"])
	}
	return registry.CacheRef{}, nil, usagef("cache %q: unknown type %q (want registry or local)", spec, kv["type"])
}

// export writes the build's steps to each --cache-to: mode=min the target
// stage's, mode=max every stage's. Layers pushed to the first tag's
// repository are mounted from there.
func export(ctx context.Context, exports []cacheExport, res *assemble.Result, pushed []name.Reference, ro registry.Options, errOut io.Writer) error {
	var from name.Reference
	if len(pushed) > 0 {
		from = pushed[0]
	}
	for _, e := range exports {
		var steps []registry.CacheStep
		for _, s := range res.Steps {
			if e.max || s.InTarget {
				steps = append(steps, registry.CacheStep{Key: s.Key, Step: s.Step, Layer: s.Layer})
			}
		}
		if err := registry.ExportCache(ctx, e.ref, steps, from, ro); err != nil {
			return err
		}
		fmt.Fprintf(errOut, "exported %d cached steps to %s\n", len(steps), e.ref)
	}
	return nil
}

// parseSize reads 4GiB, 500MB, 1G, 123 (bytes).
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		n      int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
		{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
		{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40}, {"b", 1}}
	low := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range units {
		if num, ok := strings.CutSuffix(low, u.suffix); ok {
			low, mult = strings.TrimSpace(num), u.n
			break
		}
	}
	f, err := strconv.ParseFloat(low, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("invalid size %q: want bytes or e.g. 4GiB, 500MB", s)
	}
	return int64(f * float64(mult)), nil
}

func runPrune(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := flagSet("prune", "[flags]", errOut)
	keep := fs.String("keep", "0", "bytes of cached layers to keep, least recently used removed first, e.g. 2GiB")
	cacheDir := fs.String("cache-dir", defaultCacheDir(), "the cache directory")
	if err := parse(fs, args); err != nil {
		return err
	}
	n, err := parseSize(*keep)
	if err != nil {
		return usagef("--keep: %v", err)
	}
	freed, err := (&registry.LocalCache{Dir: filepath.Join(*cacheDir, "steps")}).Prune(n)
	if err != nil {
		return err
	}
	mfreed, err := assemble.PruneCacheMounts(filepath.Join(*cacheDir, "mounts"), 0)
	if err != nil {
		return err
	}
	freed += mfreed
	assemble.EmptyTrash(filepath.Join(*cacheDir, "tmp"))
	// Unpacked bases are made again from their layers when a step needs
	// them, base manifests and configs read again from the registry, the
	// context files' sums from the files.
	rootfs := filepath.Join(*cacheDir, "rootfs")
	if err := os.RemoveAll(rootfs); err != nil {
		return err
	}
	for _, d := range []string{"meta", "context"} { // read again when needed
		if err := os.RemoveAll(filepath.Join(*cacheDir, d)); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "freed %d bytes of cached layers and cache mounts; removed the unpacked bases in %s\n", freed, rootfs)
	return nil
}
