package assemble

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/manifold-build/manifold/emulate"
	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/layers"
)

// Runner runs a command over a root filesystem in a sandbox, under qemu
// when the platform is foreign. *emulate.Sandbox is one.
type Runner interface {
	Run(ctx context.Context, spec emulate.Spec) (*emulate.Result, error)
}

// sandbox is RUN's one seam, shared by build and manifold run: a stack of
// layers and a command in, the command's changes out. Overlay directories,
// the sandbox's mount points and ID maps stay behind it.
type sandbox struct {
	runner  Runner
	rootfs  *layers.Cache // unpacked bases, by chain ID
	scratch string        // where steps' directories go on disk
	mem     *memScratch   // where they go while memory has room; nil: never
	walk    bool          // compare trees instead of reading an overlay's upper directory
}

// command is one command to run over a stack of layers.
type command struct {
	platform platform.Platform
	layers   []v1.Layer // the files it runs on, bottom first
	dirs     []string   // the same on disk, in overlayfs's format; nil: unpack them
	argv     []string
	env      []string
	user     string
	workdir  string
	network  string // "" (the host's) or "none"
	mounts   []emulate.Mount
	stdin    io.Reader
	stdout   io.Writer
	stderr   io.Writer
}

// stepFiles is what a command changed: the entries of its layer, found by
// comparing trees, or (upper) an overlay's upper directory to read them
// from; and a directory of the files after it: one to stack on the
// command's dirs, or (whole) a tree that replaces them.
type stepFiles struct {
	entries []layers.Entry
	upper   *upperChanges
	dir     string
	whole   bool
}

// upperChanges are a step's changes in an upper directory over lowers.
type upperChanges struct {
	dir    string
	lowers []string
	o      layers.ChangeOptions
}

// layer writes the step's changes as a layer, nil when there are none.
func (f *stepFiles) layer(epoch *time.Time, o layers.Options) (v1.Layer, error) {
	if u := f.upper; u != nil {
		l, err := layers.NewFromChanges(u.dir, u.lowers, u.o, epoch, o)
		if err != nil {
			return nil, fmt.Errorf("reading the step's changes: %w", err)
		}
		return l, nil
	}
	if len(f.entries) == 0 {
		return nil, nil
	}
	return layers.New(func(tw *tar.Writer) error { return layers.Write(tw, f.entries, epoch) }, o)
}

// run runs c. With keep it returns c's changes, whose directory lives in
// the sandbox's scratch folder; without, it throws them away.
func (sb *sandbox) run(ctx context.Context, c command, keep bool) (*stepFiles, error) {
	if sb.runner == nil {
		return nil, errors.New("RUN needs a sandbox, and this build has none")
	}
	if len(c.dirs) == 0 {
		base, err := sb.unpacked(ctx, c.layers)
		if err != nil {
			return nil, err
		}
		c.dirs = []string{base}
	}
	dir, err := sb.mem.stepDir()
	if err != nil {
		return nil, err
	}
	if dir != "" {
		res, err := sb.runIn(ctx, c, dir)
		if err == nil || ctx.Err() != nil || sb.mem.free() >= memFullBelow {
			return sb.finish(ctx, c, dir, res, err, keep)
		}
		os.RemoveAll(dir)
		fmt.Fprintf(c.stderr, "manifold: the step failed with the memory scratch %s full; running it again on disk\n", sb.mem.dir)
	}
	if err := os.MkdirAll(sb.scratch, 0o755); err != nil {
		return nil, err
	}
	if dir, err = os.MkdirTemp(sb.scratch, "step-"); err != nil {
		return nil, err
	}
	res, err := sb.runIn(ctx, c, dir)
	return sb.finish(ctx, c, dir, res, err, keep)
}

// finish reads what a step that ran in dir changed, or removes dir.
func (sb *sandbox) finish(ctx context.Context, c command, dir string, res *emulate.Result, err error, keep bool) (*stepFiles, error) {
	if err != nil || !keep {
		os.RemoveAll(dir)
		return nil, err
	}
	files, err := sb.changes(ctx, c, res)
	if err != nil {
		os.RemoveAll(dir)
	}
	return files, err
}

func (sb *sandbox) runIn(ctx context.Context, c command, dir string) (*emulate.Result, error) {
	spec := emulate.Spec{
		Platform: c.platform,
		Lower:    c.dirs,
		Scratch:  dir,
		Unpack:   func(tree string) error { return layers.Unpack(ctx, tree, c.layers) },
		Mounts:   c.mounts,
		Argv:     c.argv, Env: c.env, User: c.user, Workdir: c.workdir, Network: c.network,
		Stdin: c.stdin, Stdout: c.stdout, Stderr: c.stderr,
	}
	if sb.walk {
		spec.Lower, spec.Rootfs = nil, filepath.Join(dir, "rootfs")
		if err := os.Mkdir(spec.Rootfs, 0o755); err != nil {
			return nil, err
		}
		if err := spec.Unpack(spec.Rootfs); err != nil {
			return nil, err
		}
	}
	return sb.runner.Run(ctx, spec)
}

// changes lists what the command changed: from the overlay's upper
// directory, whose cost follows the change, or by comparing the tree it
// changed with the unchanged one.
func (sb *sandbox) changes(ctx context.Context, c command, res *emulate.Result) (*stepFiles, error) {
	if res.Upper != "" {
		u := &upperChanges{dir: res.Upper, lowers: c.dirs, o: layers.ChangeOptions{IDs: res.ContainerIDs}}
		return &stepFiles{upper: u, dir: res.Upper}, nil
	}
	old, err := sb.unpacked(ctx, c.layers)
	if err != nil {
		return nil, err
	}
	entries, err := layers.Diff(old, res.Rootfs)
	if err != nil {
		return nil, fmt.Errorf("comparing the step's files: %w", err)
	}
	return &stepFiles{entries: entries, dir: res.Rootfs, whole: true}, nil
}

// snapshot returns a directory with the top layer of ls in overlayfs's
// format, to stack on the layers below it (cached by chain ID).
func (sb *sandbox) snapshot(ctx context.Context, ls []v1.Layer, below []string) (string, error) {
	if sb.rootfs == nil {
		return "", errors.New("no rootfs cache configured")
	}
	return sb.rootfs.Diff(ctx, ls, below)
}

// keep makes a step's upper directory the snapshot of the layer it became,
// instead of deleting it when the build ends; without a cache, or in
// memory, it stays where it is until then.
func (sb *sandbox) keep(ls []v1.Layer, upper string) (string, error) {
	if sb.rootfs == nil || sb.mem.holds(upper) {
		return upper, nil // in memory it stays until the build ends
	}
	return sb.rootfs.Keep(ls, upper)
}

// unpacked returns one directory with all of ls unpacked, cached by chain
// ID: the base of a stage's overlay, and what COPY --from reads.
func (sb *sandbox) unpacked(ctx context.Context, ls []v1.Layer) (string, error) {
	if sb.rootfs == nil {
		return "", errors.New("no rootfs cache configured")
	}
	return sb.rootfs.Rootfs(ctx, ls)
}
