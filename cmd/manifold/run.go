package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/pflag"

	"github.com/manifold-build/manifold/emulate"
	"github.com/manifold-build/manifold/layers"
	"github.com/manifold-build/manifold/registry"
)

// sandboxFlags are the flags of commands that run steps.
type sandboxFlags struct {
	qemuDir string
	binfmt  string
}

func (s *sandboxFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&s.qemuDir, "qemu-dir", "", "directory of the qemu-*-static binaries (default: found on PATH)")
	fs.StringVar(&s.binfmt, "binfmt", "private", "how foreign binaries reach qemu: private (a binfmt_misc instance per step, Linux 6.7+; older kernels use a host handler) or host (the host's handler, or as root one registered for the build and removed afterwards)")
}

func (s *sandboxFlags) sandbox() (*emulate.Sandbox, error) {
	if s.binfmt != "private" && s.binfmt != "host" {
		return nil, usagef("--binfmt must be private or host, not %q", s.binfmt)
	}
	return &emulate.Sandbox{QemuDir: s.qemuDir, HostBinfmt: s.binfmt == "host"}, nil
}

// exitCode carries a command's exit status out of manifold run.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// runFlags are manifold run's flags.
type runFlags struct {
	platform, workdir, network, user, store, cacheDir string
	env                                               []string
	sandbox                                           sandboxFlags
}

func runRun(ctx context.Context, args []string, out, errOut io.Writer) error {
	var f runFlags
	fs := flagSet("run", "[flags] IMAGE [COMMAND [ARG...]]", errOut)
	fs.SetInterspersed(false)
	fs.StringVar(&f.platform, "platform", "", "the platform variant to run (default: the host's)")
	fs.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable: KEY=VALUE (repeatable)")
	fs.StringVarP(&f.workdir, "workdir", "w", "", "working directory (default: the image's)")
	fs.StringVarP(&f.user, "user", "u", "", "user[:group] to run as (default: the image's)")
	fs.StringVar(&f.network, "network", "default", "default (the host's) or none")
	fs.StringVar(&f.store, "store", registry.DefaultStoreDir(), "the local image store, looked in before any registry")
	fs.StringVar(&f.cacheDir, "cache-dir", defaultCacheDir(), "where unpacked images and scratch files are kept")
	f.sandbox.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return usagef("run needs an IMAGE")
	}
	p := registry.Host()
	if f.platform != "" {
		var err error
		if p, err = registry.ParsePlatform(f.platform); err != nil {
			return usageError{err}
		}
	}
	if f.network != "default" && f.network != "host" && f.network != "none" {
		return usagef("--network must be default, host or none, not %q", f.network)
	}
	sb, err := f.sandbox.sandbox()
	if err != nil {
		return err
	}
	spec, cleanup, err := f.spec(ctx, fs.Arg(0), p, fs.Args()[1:])
	if err != nil {
		return err
	}
	defer cleanup()
	spec.Stdout, spec.Stderr = out, errOut
	_, err = sb.Run(ctx, spec)
	var ee *emulate.ExitError
	if errors.As(err, &ee) {
		return exitCode(ee.Code)
	}
	return err
}

// spec prepares what docker run --rm would: the image's variant for p
// unpacked (cached), an overlay to throw away, and the command from the
// image's ENTRYPOINT and CMD (or cmd), ENV, USER and WORKDIR.
func (f *runFlags) spec(ctx context.Context, ref string, p v1.Platform, cmd []string) (emulate.Spec, func(), error) {
	nop := func() {}
	src, err := registry.Open(ctx, ref, registry.Options{Store: &registry.Store{Dir: f.store}})
	if err != nil {
		return emulate.Spec{}, nop, err
	}
	img, _, err := src.ForPlatform(p)
	if err != nil {
		return emulate.Spec{}, nop, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return emulate.Spec{}, nop, err
	}
	argv := append(append([]string(nil), cf.Config.Entrypoint...), cmd...)
	if len(cmd) == 0 {
		argv = append(argv, cf.Config.Cmd...)
	}
	if len(argv) == 0 {
		return emulate.Spec{}, nop, usagef("%s has no ENTRYPOINT or CMD: give a command", ref)
	}
	ls, err := img.Layers()
	if err != nil {
		return emulate.Spec{}, nop, err
	}
	rootfs, err := (&layers.Cache{Dir: filepath.Join(f.cacheDir, "rootfs")}).Rootfs(ctx, ls)
	if err != nil {
		return emulate.Spec{}, nop, err
	}
	scratch := filepath.Join(f.cacheDir, "tmp")
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return emulate.Spec{}, nop, err
	}
	tmp, err := os.MkdirTemp(scratch, "manifold-run-")
	if err != nil {
		return emulate.Spec{}, nop, err
	}
	spec := emulate.Spec{
		Platform: emulate.Platform{Arch: p.Architecture, Variant: p.Variant},
		Lower:    []string{rootfs}, Upper: filepath.Join(tmp, "upper"), Work: filepath.Join(tmp, "work"),
		Argv: argv, Env: mergeEnv(cf.Config.Env, f.env), User: cf.Config.User, Workdir: cf.Config.WorkingDir,
		Network: strings.TrimPrefix(f.network, "default"),
	}
	if f.user != "" {
		spec.User = f.user
	}
	if f.workdir != "" {
		spec.Workdir = f.workdir
	}
	return spec, func() { os.RemoveAll(tmp) }, nil
}

// mergeEnv sets each KEY=VALUE of extra over env.
func mergeEnv(env, extra []string) []string {
	out := append([]string(nil), env...)
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, old := range out {
			if strings.HasPrefix(old, k+"=") {
				out[i], replaced = kv, true
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}
