package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

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

func runRun(ctx context.Context, args []string, out, errOut io.Writer) error {
	var platform, workdir, network, user, store, cacheDir string
	var env []string
	var sf sandboxFlags
	fs := flagSet("run", "[flags] IMAGE [COMMAND [ARG...]]", errOut)
	fs.SetInterspersed(false)
	fs.StringVar(&platform, "platform", "", "the platform variant to run (default: the host's)")
	fs.StringArrayVarP(&env, "env", "e", nil, "set an environment variable: KEY=VALUE (repeatable)")
	fs.StringVarP(&workdir, "workdir", "w", "", "working directory (default: the image's)")
	fs.StringVarP(&user, "user", "u", "", "user[:group] to run as (default: the image's)")
	fs.StringVar(&network, "network", "default", "default (the host's) or none")
	fs.StringVar(&store, "store", registry.DefaultStoreDir(), "the local image store, looked in before any registry")
	fs.StringVar(&cacheDir, "cache-dir", defaultCacheDir(), "where unpacked images are kept")
	sf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return usagef("run needs an IMAGE")
	}
	p := registry.Host()
	if platform != "" {
		var err error
		if p, err = registry.ParsePlatform(platform); err != nil {
			return usageError{err}
		}
	}
	if network != "default" && network != "host" && network != "none" {
		return usagef("--network must be default, host or none, not %q", network)
	}
	sb, err := sf.sandbox()
	if err != nil {
		return err
	}
	src, err := registry.Open(ctx, fs.Arg(0), registry.Options{Store: &registry.Store{Dir: store}})
	if err != nil {
		return err
	}
	img, _, err := src.ForPlatform(p)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	ls, err := img.Layers()
	if err != nil {
		return err
	}
	rootfs, err := (&layers.Cache{Dir: filepath.Join(cacheDir, "rootfs")}).Rootfs(ctx, ls)
	if err != nil {
		return err
	}
	argv := append(append([]string(nil), cf.Config.Entrypoint...), fs.Args()[1:]...)
	if fs.NArg() == 1 {
		argv = append(argv, cf.Config.Cmd...)
	}
	if len(argv) == 0 {
		return usagef("%s has no ENTRYPOINT or CMD: give a command", fs.Arg(0))
	}
	scratch := filepath.Join(cacheDir, "tmp")
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(scratch, "manifold-run-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	spec := emulate.Spec{
		Platform: emulate.Platform{Arch: p.Architecture, Variant: p.Variant},
		Lower:    []string{rootfs}, Upper: filepath.Join(tmp, "upper"), Work: filepath.Join(tmp, "work"),
		Argv: argv, Env: mergeEnv(cf.Config.Env, env), User: cf.Config.User, Workdir: cf.Config.WorkingDir,
		Network: strings.TrimPrefix(network, "default"),
		Stdout:  out, Stderr: errOut,
	}
	if user != "" {
		spec.User = user
	}
	if workdir != "" {
		spec.Workdir = workdir
	}
	_, err = sb.Run(ctx, spec)
	var ee *emulate.ExitError
	if errors.As(err, &ee) {
		return exitCode(ee.Code)
	}
	return err
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
