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

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/emulate"
	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/layers"
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
	platform, workdir, network, user, cacheDir string
	env                                        []string
	sandbox                                    sandboxFlags
	registry                                   registryFlags
}

func runRun(ctx context.Context, args []string, out, errOut io.Writer) error {
	var f runFlags
	fs := flagSet("run", "[flags] IMAGE [COMMAND [ARG...]]", errOut)
	fs.SetInterspersed(false)
	fs.StringVar(&f.platform, "platform", "", "the platform variant to run (default: the host's)")
	fs.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable: KEY=VALUE, or KEY to take it from the environment (repeatable)")
	fs.StringVarP(&f.workdir, "workdir", "w", "", "working directory (default: the image's)")
	fs.StringVarP(&f.user, "user", "u", "", "user[:group] to run as (default: the image's)")
	fs.StringVar(&f.network, "network", "default", "network: default or host (the host's), or none (loopback only)")
	f.registry.register(fs)
	fs.StringVar(&f.cacheDir, "cache-dir", defaultCacheDir(), "where unpacked images and scratch files are kept")
	f.sandbox.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return usagef("run needs an IMAGE")
	}
	o, err := f.options(fs.Arg(0), fs.Args()[1:])
	if err != nil {
		return err
	}
	o.Stdin, o.Stdout, o.Stderr = os.Stdin, out, errOut
	err = assemble.Run(ctx, o)
	var ee *emulate.ExitError
	switch {
	case errors.As(err, &ee):
		return exitCode(ee.Code)
	case errors.Is(err, assemble.ErrNoCommand):
		return usageError{err}
	}
	return err
}

func (f *runFlags) options(image string, command []string) (assemble.RunOptions, error) {
	o := assemble.RunOptions{Image: image, Command: command, User: f.user, Workdir: f.workdir}
	if f.platform != "" {
		p, err := platform.Parse(f.platform)
		if err != nil {
			return o, usageError{err}
		}
		o.Platform = p
	}
	network, err := networkFlag(f.network)
	if err != nil {
		return o, err
	}
	o.Network = network
	runner, err := f.sandbox.sandbox()
	if err != nil {
		return o, err
	}
	o.Runner = runner
	for _, kv := range f.env {
		if _, _, ok := strings.Cut(kv, "="); !ok {
			kv += "=" + os.Getenv(kv)
		}
		o.Env = append(o.Env, kv)
	}
	ro, err := f.registry.options()
	if err != nil {
		return o, err
	}
	o.Registry = ro
	o.Rootfs = &layers.Cache{Dir: filepath.Join(f.cacheDir, "rootfs")}
	o.WorkDir = filepath.Join(f.cacheDir, "tmp")
	return o, nil
}

// networkFlag checks a --network value: default and host both mean the
// host's network, none a loopback of the step's own.
func networkFlag(s string) (string, error) {
	switch s {
	case "default", "host":
		return "", nil
	case "none":
		return s, nil
	}
	return "", usagef("--network must be default, host or none, not %q", s)
}
