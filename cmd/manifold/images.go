package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/pflag"

	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/registry"
)

// The commands that move and name images, crane's and buildx imagetools'
// habits: login, logout, push, copy, index, tag, digest, ls.

func registryCommand(name, use string, errOut io.Writer) (*pflag.FlagSet, *registryFlags) {
	fs := flagSet(name, use, errOut)
	rf := &registryFlags{}
	rf.register(fs)
	return fs, rf
}

func runLogin(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs, rf := registryCommand("login", "[-u USER] [-p PASSWORD | --password-stdin] REGISTRY", errOut)
	user := fs.StringP("username", "u", "", "the user name")
	pass := fs.StringP("password", "p", "", "the password or token (visible to other users of this machine: prefer --password-stdin)")
	stdin := fs.Bool("password-stdin", false, "read the password or token from standard input")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("login takes exactly one REGISTRY")
	}
	switch {
	case *stdin && *pass != "":
		return usagef("--password and --password-stdin exclude each other")
	case *stdin:
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && err != io.EOF {
			return err
		}
		*pass = strings.TrimRight(line, "\r\n")
	}
	if *user == "" || *pass == "" {
		return usagef("login needs -u USER and a password (-p or --password-stdin)")
	}
	ro, err := rf.options()
	if err != nil {
		return err
	}
	host := registryHost(fs.Arg(0))
	if err := registry.Login(ctx, host, *user, *pass, ro); err != nil {
		return err
	}
	fmt.Fprintf(errOut, "logged in to %s\n", host)
	return nil
}

// registryHost is the registry part of what the user typed: a host, or a
// URL (as docker login takes them).
func registryHost(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	host, _, _ := strings.Cut(s, "/")
	if host == "docker.io" || host == "index.docker.io" {
		return "https://index.docker.io/v1/" // the key docker keeps Docker Hub's credentials under
	}
	return host
}

func runLogout(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := flagSet("logout", "REGISTRY", errOut)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("logout takes exactly one REGISTRY")
	}
	host := registryHost(fs.Arg(0))
	if err := registry.Logout(host); err != nil {
		return err
	}
	fmt.Fprintf(errOut, "logged out of %s\n", host)
	return nil
}

func runPush(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs, rf := registryCommand("push", "SRC DST", errOut)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usagef("push takes SRC (in the local store, or oci-layout://DIR[:TAG]) and DST")
	}
	return writeImage(ctx, rf, fs.Arg(0), fs.Arg(1), nil, out)
}

func runCopy(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs, rf := registryCommand("copy", "SRC DST", errOut)
	plats := fs.StringSlice("platform", nil, "copy only these platforms (one: its image alone; default: every one)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usagef("copy takes SRC and DST")
	}
	ps, err := platform.ParseList(*plats)
	if err != nil {
		return usageError{err}
	}
	rf.noStore = true // a registry to a registry
	return writeImage(ctx, rf, fs.Arg(0), fs.Arg(1), ps, out)
}

// writeImage puts src (every platform, or those given) at dst and prints
// its digest.
func writeImage(ctx context.Context, rf *registryFlags, src, dst string, plats []platform.Platform, out io.Writer) error {
	ro, err := rf.options()
	if err != nil {
		return err
	}
	to, err := name.ParseReference(dst)
	if err != nil {
		return usagef("invalid DST %q: %v", dst, err)
	}
	from, err := registry.Open(ctx, src, ro)
	if err != nil {
		return err
	}
	if from, err = from.Select(plats); err != nil {
		return err
	}
	h, err := registry.Write(ctx, from, to, ro)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, h)
	return nil
}

func runIndex(ctx context.Context, args []string, out, errOut io.Writer) error {
	if len(args) == 0 || (args[0] != "create" && args[0] != "append") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(errOut, "Usage: manifold index create -t TAG [--push] SRC...\n       manifold index append -t TAG SRC...")
			return pflag.ErrHelp
		}
		return usagef("index takes create or append")
	}
	sub := args[0]
	fs, rf := registryCommand("index "+sub, "-t TAG [--push] SRC...", errOut)
	tags := fs.StringArrayP("tag", "t", nil, "the index's name (repeatable)")
	push := fs.Bool("push", false, "push the index (else print it)")
	dups := fs.Bool("allow-duplicates", false, "keep two entries for one platform")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if len(*tags) == 0 || fs.NArg() == 0 && sub == "create" {
		return usagef("index %s needs -t TAG and at least one SRC", sub)
	}
	ro, err := rf.options()
	if err != nil {
		return err
	}
	srcs := fs.Args()
	if sub == "append" {
		srcs = append([]string{(*tags)[0]}, srcs...) // what the tag holds, then the rest
		*push = true
	}
	var sources []*registry.Source
	for _, s := range srcs {
		src, err := registry.Open(ctx, s, ro)
		if err != nil {
			return err
		}
		sources = append(sources, src)
	}
	entries, err := registry.Entries(sources, *dups)
	if err != nil {
		return err
	}
	idx := registry.NewIndex(entries)
	if !*push {
		m, err := idx.IndexManifest()
		if err != nil {
			return err
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(m)
	}
	var h fmt.Stringer
	for _, t := range *tags {
		dst, err := name.ParseReference(t)
		if err != nil {
			return usagef("invalid tag %q: %v", t, err)
		}
		d, err := registry.Write(ctx, &registry.Source{Name: dst.String(), Index: idx}, dst, ro)
		if err != nil {
			return err
		}
		h = d
		fmt.Fprintf(errOut, "pushed %s\n", dst.Name())
	}
	fmt.Fprintln(out, h)
	return nil
}

func runTag(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs, rf := registryCommand("tag", "SRC TAG...", errOut)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 2 {
		return usagef("tag takes SRC and at least one TAG")
	}
	ro, err := rf.options()
	if err != nil {
		return err
	}
	return registry.Tag(ctx, fs.Arg(0), fs.Args()[1:], ro)
}

func runDigest(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs, rf := registryCommand("digest", "REF", errOut)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("digest takes exactly one REF")
	}
	ro, err := rf.options()
	if err != nil {
		return err
	}
	h, err := registry.Digest(ctx, fs.Arg(0), ro)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, h)
	return nil
}

func runLs(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs, rf := registryCommand("ls", "REPO", errOut)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("ls takes exactly one REPO")
	}
	ro, err := rf.options()
	if err != nil {
		return err
	}
	tags, err := registry.Tags(ctx, fs.Arg(0), ro)
	if err != nil {
		return err
	}
	for _, t := range tags {
		fmt.Fprintln(out, t)
	}
	return nil
}
