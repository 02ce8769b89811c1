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
	"strings"
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
		fmt.Fprintf(errOut, "Usage: manifold %s %s\n", name, use)
		if ex := examples[name]; ex != "" {
			fmt.Fprintf(errOut, "\nExample:\n%s\n", ex)
		}
		fmt.Fprintf(errOut, "\nFlags:\n%s", fs.FlagUsages())
	}
	return fs
}

// examples show each command as a user would call it.
var examples = map[string]string{
	"build": `  manifold build --platform linux/amd64,linux/arm64 -t registry.example/app:1.0 --push .
  manifold build --platform linux/arm64 -t app:dev .            # into the local store
  manifold build --secret id=npmrc,src=$HOME/.npmrc -o type=oci-layout,dest=out .`,
	"inspect": `  manifold inspect --platform linux/arm64 registry.example/app:1.0`,
	"run":     `  manifold run --platform linux/arm64 registry.example/app:1.0 uname -m`,
	"prune":   `  manifold prune --keep 2GiB`,
	"login":   `  echo "$REGISTRY_TOKEN" | manifold login -u ci --password-stdin ghcr.io`,
	"logout":  `  manifold logout ghcr.io`,
	"push": `  manifold push app:dev registry.example/app:1.0
  manifold push oci-layout://out:1.0 registry.example/app:1.0`,
	"copy": `  manifold copy docker.io/library/alpine:3 registry.example/mirror/alpine:3
  manifold copy --platform linux/arm64 registry.example/app:1.0 registry.example/app:1.0-arm64`,
	"index create": `  manifold index create -t registry.example/app:1.0 --push registry.example/app@sha256:aaa… registry.example/app@sha256:bbb…`,
	"index append": `  manifold index append -t registry.example/app:1.0 registry.example/app:1.0-riscv64`,
	"tag":          `  manifold tag registry.example/app:1.0 latest stable`,
	"digest":       `  manifold digest registry.example/app:1.0`,
	"ls":           `  manifold ls registry.example/app`,
	"tags":         `  manifold tags --image ghcr.io/me/app > tags.txt && manifold build -t @tags.txt --push .`,
	"version":      `  manifold version`,
}

// buildxOnly are flags of docker buildx build that manifold has not, and
// what to do instead: a buildx user gets told rather than a bare
// "unknown flag".
var buildxOnly = map[string]string{
	"load":            "there is no Docker daemon to load into: without --push or --output the result goes to manifold's local store, where run, inspect, push and FROM find it",
	"builder":         "manifold needs no builder instance: it is one",
	"pull":            "bases are always read from their registry (or the local store) by digest",
	"attest":          "attestations (SBOM, provenance) are not made yet",
	"sbom":            "attestations (SBOM, provenance) are not made yet",
	"provenance":      "attestations (SBOM, provenance) are not made yet",
	"iidfile":         "the digest is printed on stdout, and --metadata-file writes it as buildx does",
	"quiet":           "use --progress quiet",
	"add-host":        "RUN steps use the host's /etc/hosts",
	"allow":           "no entitlements are needed: RUN --security=insecure is not supported",
	"annotation":      "annotations are not set from the command line yet",
	"call":            "builds only build: use a linter for checks",
	"check":           "builds only build: use a linter for checks",
	"cgroup-parent":   "RUN steps run in the caller's cgroup",
	"shm-size":        "RUN steps get a 64 MiB /dev/shm",
	"ulimit":          "RUN steps inherit the caller's limits",
	"no-cache-filter": "use --no-cache",
}

// parse parses flags, turning flag errors into usage errors.
func parse(fs *pflag.FlagSet, args []string) error {
	if fs.Name() == "build" {
		for _, a := range args {
			if a == "--" {
				break
			}
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if a == "-q" {
				name = "quiet"
			}
			if why, ok := buildxOnly[name]; ok && (strings.HasPrefix(a, "--") || a == "-q") {
				return usagef("--%s is a docker buildx flag manifold does not have: %s", name, why)
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	return nil
}
