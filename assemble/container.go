package assemble

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/layers"
	"github.com/manifold-build/manifold/registry"
)

// RunOptions say what Run runs: a command in one platform variant of an
// image, as docker run --rm --platform does.
type RunOptions struct {
	Image    string
	Platform platform.Platform // default: the host's
	Command  []string          // replaces the image's CMD when given
	Env      []string          // K=V, over the image's ENV
	User     string            // default: the image's USER
	Workdir  string            // default: the image's WORKDIR
	Network  string            // "" (the host's) or "none"
	Registry registry.Options
	Rootfs   *layers.Cache // unpacked images, by chain ID
	WorkDir  string        // where the run's changes go, thrown away after
	Runner   Runner

	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// ErrNoCommand is an image with no ENTRYPOINT or CMD, run without a
// command.
var ErrNoCommand = errors.New("the image has no ENTRYPOINT or CMD: give a command")

// Run runs a command in an image through the same sandbox as RUN steps: the
// image's ENTRYPOINT and CMD (or Command), ENV, USER and WORKDIR; changes
// are thrown away. A command that fails gives an *emulate.ExitError.
func Run(ctx context.Context, o RunOptions) error {
	if o.Platform == (platform.Platform{}) {
		o.Platform = platform.Host()
	}
	src, err := registry.Open(ctx, o.Image, o.Registry)
	if err != nil {
		return err
	}
	img, _, err := src.ForPlatform(o.Platform)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("reading %s's config: %w", o.Image, err)
	}
	c := cf.Config
	argv := append(append([]string(nil), c.Entrypoint...), o.Command...)
	if len(o.Command) == 0 {
		argv = append(argv, c.Cmd...)
	}
	if len(argv) == 0 {
		return fmt.Errorf("%s: %w", o.Image, ErrNoCommand)
	}
	ls, err := img.Layers()
	if err != nil {
		return err
	}
	sb := &sandbox{runner: o.Runner, rootfs: o.Rootfs, scratch: o.WorkDir}
	_, err = sb.run(ctx, command{
		platform: o.Platform, layers: ls,
		argv: argv, env: mergeEnv(c.Env, o.Env), user: or(o.User, c.User), workdir: or(o.Workdir, c.WorkingDir),
		network: o.Network, stdin: o.Stdin, stdout: o.Stdout, stderr: o.Stderr,
	}, false)
	return err
}

// mergeEnv sets each KEY=VALUE of extra over env.
func mergeEnv(env, extra []string) []string {
	out := append([]string(nil), env...)
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		out = setEnv(out, k, v)
	}
	return out
}

func or(s, def string) string {
	if s != "" {
		return s
	}
	return def
}
