package assemble

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/manifold-build/manifold/emulate"
	"github.com/manifold-build/manifold/layers"
	"github.com/manifold-build/manifold/registry"
)

// Runner runs the command of a RUN step in a sandbox over the stage's
// files. *emulate.Sandbox is one.
type Runner interface {
	Run(ctx context.Context, spec emulate.Spec) (*emulate.Result, error)
}

// run runs a RUN step: the command's changes become the step's layer, or
// no layer when it changed nothing.
func (s *state) run(ctx context.Context, in *Instruction) error {
	network, err := s.network(in)
	if err != nil {
		return err
	}
	if s.b.o.Runner == nil {
		return errors.New("RUN needs a sandbox, and this build has none")
	}
	if err := s.materialize(ctx); err != nil {
		return err
	}
	step, err := os.MkdirTemp(s.b.workDir, "step-")
	if err != nil {
		return err
	}
	argv := s.command(in)
	spec := emulate.Spec{
		Platform: emulatePlatform(s.platform),
		Lower:    s.dirs,
		Upper:    filepath.Join(step, "upper"),
		Work:     filepath.Join(step, "work"),
		Argv:     argv, Env: s.runEnv(), User: s.cfg.Config.User, Workdir: s.cfg.Config.WorkingDir,
		Network: network,
	}
	spec.Stdout = s.b.output(s.platform)
	spec.Stderr = spec.Stdout
	files, err := s.capture(ctx, spec, step)
	if err != nil {
		os.RemoveAll(step)
		return err
	}
	createdBy := "RUN " + strings.Join(argv, " ") + " # buildkit"
	if in.JSON {
		createdBy = "RUN " + jsonArgs(argv) + " # buildkit"
	}
	if len(files.entries) == 0 {
		os.RemoveAll(step)
		s.record(in, createdBy, true)
		return nil
	}
	l, err := layers.New(func(tw *tar.Writer) error { return layers.Write(tw, files.entries, s.b.o.Epoch) }, s.layerOptions())
	if err != nil {
		return err
	}
	s.addLayer(in, l, createdBy)
	if files.whole {
		s.dirs = []string{files.dir}
	} else {
		s.dirs = append(s.dirs, files.dir)
	}
	s.dirLayers = len(s.layers)
	return nil
}

// stepFiles is what a RUN left: its changes, and a directory of the
// stage's files after it: the overlay's upper one, to stack on the stage's,
// or a whole tree that replaces them.
type stepFiles struct {
	entries []layers.Entry
	dir     string
	whole   bool
}

// network is a RUN's network: its --network flag, else the build's.
func (s *state) network(in *Instruction) (string, error) {
	network, ok := in.Flags["network"]
	if !ok {
		network = s.b.o.Network
	}
	switch network {
	case "", "default", "host":
		return "", nil
	case "none":
		return network, nil
	}
	return "", fmt.Errorf("RUN --network=%s is not supported (want none, host or default)", network)
}

// capture runs the step and lists its changes: through overlayfs, or by
// comparing trees where it cannot be mounted (or when asked to).
func (s *state) capture(ctx context.Context, spec emulate.Spec, step string) (*stepFiles, error) {
	if s.b.o.WalkCapture {
		return s.runWalked(ctx, spec, step)
	}
	files, err := s.runOverlay(ctx, spec)
	var oe *emulate.OverlayError
	if errors.As(err, &oe) {
		s.b.progress(s.platform, "overlayfs unavailable (%v): comparing trees instead", oe.Err)
		os.RemoveAll(spec.Upper)
		return s.runWalked(ctx, spec, step)
	}
	return files, err
}

// runOverlay runs the step on an overlay of the stage's directories and
// reads its changes from the upper directory.
func (s *state) runOverlay(ctx context.Context, spec emulate.Spec) (*stepFiles, error) {
	res, err := s.b.o.Runner.Run(ctx, spec)
	if err != nil {
		return nil, err
	}
	skip := stubSet(res.Stubs)
	entries, err := layers.Changes(spec.Upper, spec.Lower, layers.ChangeOptions{Skip: skip, IDs: res.IDMap.ToContainer})
	if err != nil {
		return nil, fmt.Errorf("reading the step's changes: %w", err)
	}
	removeStubs(spec.Upper, res.Stubs)
	return &stepFiles{entries: entries, dir: spec.Upper}, nil
}

// runWalked runs the step on a private copy of the stage's files and
// compares the copy with the stage afterwards: slower, for file systems
// where overlayfs cannot be mounted.
func (s *state) runWalked(ctx context.Context, spec emulate.Spec, step string) (*stepFiles, error) {
	old, err := s.b.rootfs(ctx, s.layers)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(step, "rootfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	if err := layers.Unpack(ctx, dir, s.layers); err != nil {
		return nil, err
	}
	spec.Lower, spec.Upper, spec.Work, spec.Rootfs = nil, "", "", dir
	res, err := s.b.o.Runner.Run(ctx, spec)
	if err != nil {
		return nil, err
	}
	removeStubs(dir, res.Stubs)
	entries, err := layers.Diff(old, dir)
	if err != nil {
		return nil, fmt.Errorf("comparing the step's files: %w", err)
	}
	return &stepFiles{entries: entries, dir: dir, whole: true}, nil
}

// materialize puts the stage's files on disk as directories an overlay can
// stack: the base unpacked once (cached by chain ID), then one directory
// per layer added since.
func (s *state) materialize(ctx context.Context) error {
	if len(s.dirs) == 0 {
		base, err := s.b.rootfs(ctx, s.layers[:s.nBase])
		if err != nil {
			return fmt.Errorf("unpacking the base: %w", err)
		}
		s.dirs, s.dirLayers = []string{base}, s.nBase
	}
	for s.dirLayers < len(s.layers) {
		d, err := os.MkdirTemp(s.b.workDir, "layer-")
		if err != nil {
			return err
		}
		if err := layers.Unpack(ctx, d, s.layers[s.dirLayers:s.dirLayers+1]); err != nil {
			return err
		}
		s.dirs = append(s.dirs, d)
		s.dirLayers++
	}
	return nil
}

// runEnv is the command's environment: ENV, then the stage's ARGs that ENV
// does not set (they are not kept in the image), and a default PATH.
func (s *state) runEnv() []string {
	env := append([]string(nil), s.cfg.Config.Env...)
	for _, kv := range s.args {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := lookupEnv(env, k); !ok {
			env = append(env, kv)
		}
	}
	if _, ok := lookupEnv(env, "PATH"); !ok {
		env = append(env, "PATH="+defaultPath)
	}
	return env
}

func emulatePlatform(p v1.Platform) emulate.Platform {
	return emulate.Platform{Arch: p.Architecture, Variant: p.Variant}
}

func stubSet(stubs []string) map[string]bool {
	m := map[string]bool{}
	for _, s := range stubs {
		m[strings.TrimPrefix(s, "/")] = true
	}
	return m
}

// removeStubs takes the sandbox's empty mount points out of a step's
// directory, deepest first, so that later steps do not see them.
func removeStubs(dir string, stubs []string) {
	for i := len(stubs) - 1; i >= 0; i-- {
		p := filepath.Join(dir, stubs[i])
		if fi, err := os.Lstat(p); err == nil && (fi.IsDir() || fi.Size() == 0) {
			os.Remove(p) // fails, as it should, on a directory the step filled
		}
	}
}

// output gives a platform's step output writer: whole lines, prefixed with
// the platform, to the progress stream; nothing when quiet.
func (b *builder) output(p v1.Platform) io.Writer {
	if b.o.Progress == nil {
		return io.Discard
	}
	return &prefixWriter{mu: &b.outMu, w: b.o.Progress, prefix: "[" + registry.Format(p) + "] "}
}

type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		if _, err := fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i]); err != nil {
			return 0, err
		}
		p.buf = p.buf[i+1:]
	}
}
