// Command manifold builds multi-architecture container images from a
// Dockerfile without a Docker daemon, and pushes them to a registry as one
// manifest list.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/manifold-build/manifold/emulate"
	"github.com/manifold-build/manifold/registry"
)

// usageError marks errors in what the user typed: exit code 2.
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, out, errOut io.Writer) error
}

func commands() []command {
	return []command{
		{"build", "build an image for one or more platforms from a Dockerfile", runBuild},
		{"inspect", "show an image or index: platforms, digests, layers, config", runInspect},
		{"run", "run a command in one platform variant of an image", runRun},
		{"prune", "empty the local cache of build steps and unpacked bases", runPrune},
		{"login", "log in to a registry (Docker's config.json and credential helpers)", runLogin},
		{"logout", "log out of a registry", runLogout},
		{"push", "push an image or index from the local store or an OCI layout", runPush},
		{"copy", "copy an image or index between registries, every platform or some", runCopy},
		{"index", "create or append to a manifest list from images and indexes", runIndex},
		{"tag", "add tags to an image or index in a registry", runTag},
		{"digest", "print the digest of an image or index", runDigest},
		{"ls", "list the tags of a repository", runLs},
		{"tags", "print the tags of the current git ref, as docker/metadata-action derives them", runTags},
		{"version", "print the version, the Go version, the qemu found and what this kernel can do", runVersion},
	}
}

func main() {
	emulate.Main() // the sandbox's init, when re-executed as one
	ctx, interrupted := interrupts(os.Stderr)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if sig, ok := interrupted(); ok {
		code = signalCode(sig)
	}
	os.Exit(code)
}

// interrupts cancels the returned context on the first SIGINT or SIGTERM:
// sandboxed processes are killed, scratch directories removed, and no tag
// is created or moved. A second one exits at once.
func interrupts(errOut io.Writer) (context.Context, func() (os.Signal, bool)) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		fmt.Fprintf(errOut, "manifold: %s: stopping (again to exit at once)\n", sigName(sig))
		cancel(signalError{sig})
		sig = <-sigs
		os.Exit(signalCode(sig))
	}()
	return ctx, func() (os.Signal, bool) {
		var se signalError
		if errors.As(context.Cause(ctx), &se) {
			return se.sig, true
		}
		return nil, false
	}
}

type signalError struct{ sig os.Signal }

func (e signalError) Error() string { return "interrupted (" + sigName(e.sig) + ")" }

func sigName(sig os.Signal) string {
	switch sig {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return sig.String()
}

// signalCode is the exit status of a program a signal stopped, as shells
// report it: 130 for SIGINT, 143 for SIGTERM.
func signalCode(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 1
}

func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(errOut)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		if c.name == "build" || c.name == "run" {
			emulate.Unshare() // rootless: go on as root of a user namespace
		}
		err := c.run(ctx, args[1:], out, errOut)
		if se := (signalError{}); err != nil && errors.As(context.Cause(ctx), &se) {
			err = se // what stopped it, not the context canceled it caused
		}
		var code exitCode
		switch {
		case err == nil:
			return 0
		case errors.As(err, &code):
			return int(code)
		case errors.Is(err, pflag.ErrHelp):
			return 0
		case errors.As(err, new(usageError)):
			fmt.Fprintf(errOut, "manifold %s: %v\n", c.name, err)
			return 2
		}
		fmt.Fprintf(errOut, "manifold %s: %v\n", c.name, registry.LoginHint(err))
		return 1
	}
	fmt.Fprintf(errOut, "manifold: unknown command %q\n", args[0])
	usage(errOut)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "manifold builds multi-architecture container images without a Docker daemon.")
	fmt.Fprintln(w, "\nUsage: manifold COMMAND [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'manifold COMMAND --help' for a command's flags.")
}

// flagSet makes a pflag set that reports errors instead of exiting.
func flagSet(name, use string, errOut io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.Usage = func() {
		fmt.Fprintf(errOut, "Usage: manifold %s %s\n\nFlags:\n%s", name, use, fs.FlagUsages())
	}
	return fs
}

// parse parses flags, turning flag errors into usage errors.
func parse(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	return nil
}
