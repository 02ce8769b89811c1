package assemble

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/manifold-build/manifold/emulate"
	"github.com/manifold-build/manifold/layers"
)

// run runs a RUN step: the command's changes become the step's layer, or
// no layer when it changed nothing.
func (s *state) run(ctx context.Context, in *Instruction) error {
	network, err := s.network(in)
	if err != nil {
		return err
	}
	if sec, ok := in.Flags["security"]; ok && sec != "sandbox" {
		return fmt.Errorf("RUN --security=%s is not supported: manifold's steps run in an unprivileged user namespace, and a privileged step needs a privileged container", sec)
	}
	mounts, err := s.parseMounts(in)
	if err != nil {
		return err
	}
	mountKeys, err := s.mountKeys(ctx, mounts)
	if err != nil {
		return err
	}
	if err := s.requiredGiven(mounts); err != nil {
		return err // even when the step is cached: the build asks for it
	}
	c := command{
		platform: s.platform, argv: s.command(in), env: s.runEnv(),
		user: s.cfg.Config.User, workdir: s.cfg.Config.WorkingDir, network: network,
	}
	createdBy := "RUN " + strings.Join(c.argv, " ") + " # buildkit"
	if in.JSON {
		createdBy = "RUN " + jsonArgs(c.argv) + " # buildkit"
	}
	var docs []string
	for _, h := range in.Heredocs {
		docs = append(docs, h.Name, h.Text())
	}
	k := key(s.key, "RUN", c.platform.String(), c.argv, c.env, c.user, c.workdir, c.network, mountKeys, docs)
	return s.cached(k, in, func() (*stepResult, error) {
		if err := s.materialize(ctx); err != nil {
			return nil, err
		}
		sm, err := s.prepareMounts(ctx, mounts)
		if err != nil {
			return nil, err
		}
		defer sm.close()
		if err := s.scriptMount(in, sm); err != nil {
			return nil, err
		}
		c.mounts = sm.mounts
		c.env = append(slices.Clone(c.env), sm.env...) // after the key: secrets never enter it
		c.layers, c.dirs = s.layers, s.dirs
		c.stdout = s.out()
		c.stderr = c.stdout
		files, err := s.runTimed(ctx, c)
		if err != nil {
			return nil, err
		}
		res := &stepResult{createdBy: createdBy, files: files}
		if res.layer, err = files.layer(s.b.o.Epoch, s.layerOptions()); err != nil || res.layer == nil {
			return res, err
		}
		if !files.whole {
			files.dir, err = s.b.sandbox.keep(append(slices.Clone(s.layers), res.layer), files.dir)
		}
		return res, err
	})
}

// scriptMount puts a RUN's heredoc that starts with #! where its command
// (see command) runs it: /dev/pipes/NAME, mode 0755, read-only, as
// BuildKit mounts it.
func (s *state) scriptMount(in *Instruction, sm *stepMounts) error {
	if !in.Script || !strings.HasPrefix(in.Heredocs[0].Text(), "#!") {
		return nil
	}
	dir, err := os.MkdirTemp(s.b.workDir, "pipes-")
	if err != nil {
		return err
	}
	sm.cleanup = append(sm.cleanup, func() { os.RemoveAll(dir) })
	h := in.Heredocs[0]
	if err := os.WriteFile(filepath.Join(dir, h.Name), []byte(h.Text()), 0o755); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(dir, h.Name), 0o755); err != nil {
		return err
	}
	sm.mounts = append(sm.mounts, emulate.Mount{Target: "/dev/pipes", Source: dir, ReadOnly: true})
	return nil
}

// runTimed runs c, killing it after the build's StepTimeout.
func (s *state) runTimed(ctx context.Context, c command) (*stepFiles, error) {
	limit := s.b.o.StepTimeout
	if limit <= 0 {
		return s.b.sandbox.run(ctx, c, true)
	}
	tctx, cancel := context.WithTimeoutCause(ctx, limit, errStepTimeout)
	defer cancel()
	files, err := s.b.sandbox.run(tctx, c, true)
	if err != nil && ctx.Err() == nil && context.Cause(tctx) == errStepTimeout {
		return nil, fmt.Errorf("killed after %s (--step-timeout)", limit)
	}
	return files, err
}

var errStepTimeout = errors.New("step timed out")

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

// materialize puts the stage's files on disk as directories an overlay can
// stack: the base unpacked once (cached by chain ID), then one directory
// per layer added since.
func (s *state) materialize(ctx context.Context) error {
	if len(s.dirs) == 0 {
		base, err := s.b.sandbox.unpacked(ctx, s.layers[:s.nBase])
		if err != nil {
			return fmt.Errorf("unpacking the base: %w", err)
		}
		s.dirs, s.dirLayers = []string{base}, s.nBase
	}
	for s.dirLayers < len(s.layers) {
		d, err := s.b.sandbox.snapshot(ctx, s.layers[:s.dirLayers+1], s.dirs)
		if errors.Is(err, layers.ErrNeedsRoot) {
			// Deletions cannot be kept in a folder of their own here: the
			// whole stack in one instead.
			full, err := s.b.sandbox.unpacked(ctx, s.layers)
			if err != nil {
				return err
			}
			s.dirs, s.dirLayers = []string{full}, len(s.layers)
			return nil
		}
		if err != nil {
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
