package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/manifold-build/manifold/emulate"
)

// version is set at release builds (-ldflags "-X main.version=v1.2.3");
// otherwise the module's version or the git commit it was built from.
var version = ""

func runVersion(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := flagSet("version", "", errOut)
	qemuDir := fs.String("qemu-dir", "", "where the qemu-*-static binaries are (default: on PATH)")
	if err := parse(fs, args); err != nil {
		return err
	}
	v, commit := version, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					commit += " (modified)"
				}
			}
		}
	}
	fmt.Fprintf(out, "manifold %s\ncommit:   %s\ngo:       %s %s/%s\n", v, or(commit, "unknown"), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	support := emulate.Check(*qemuDir)
	private := "yes"
	if !support.PrivateBinfmt {
		private = "no (Linux 6.7+ needed; foreign platforms need a host binfmt_misc handler, --binfmt host, as root)"
	}
	fmt.Fprintf(out, "private binfmt_misc: %s\nplatforms:\n", private)
	for _, p := range support.Platforms {
		how := "native"
		switch {
		case p.Missing != "":
			how = "cannot run: " + p.Missing
		case !p.Native:
			how = "qemu " + p.Emulator
		}
		fmt.Fprintf(out, "  %-16s %s\n", p.Platform, how)
	}
	return nil
}

func or(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

func runTags(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := flagSet("tags", "--image NAME [--git DIR]", errOut)
	images := fs.StringArray("image", nil, "the image name the tags are for, e.g. ghcr.io/me/app (repeatable)")
	dir := fs.String("git", ".", "the git work tree")
	if err := parse(fs, args); err != nil {
		return err
	}
	if len(*images) == 0 || fs.NArg() != 0 {
		return usagef("tags needs --image NAME")
	}
	tags, err := gitTags(*dir, os.Getenv)
	if err != nil {
		return err
	}
	for _, img := range *images {
		for _, t := range tags {
			fmt.Fprintf(out, "%s:%s\n", img, t)
		}
	}
	return nil
}

var semver = regexp.MustCompile(`^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// gitTags derives tags from the current ref as docker/metadata-action's
// defaults with semver patterns do: on a v1.2.3 tag 1.2.3, 1.2, 1 and
// latest (a pre-release only its version); on a branch its sanitised
// name; on a pull request pr-N; and sha-SHORT always. The ref comes from
// the CI (GITHUB_REF, CI_COMMIT_TAG/CI_COMMIT_BRANCH, CI_MERGE_REQUEST_IID)
// or else from git itself.
func gitTags(dir string, env func(string) string) ([]string, error) {
	git := func(args ...string) string {
		out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	sha := env("GITHUB_SHA")
	if sha == "" {
		sha = env("CI_COMMIT_SHA")
	}
	if sha == "" {
		sha = git("rev-parse", "HEAD")
	}
	if sha == "" {
		return nil, fmt.Errorf("%s is no git work tree with a commit", dir)
	}
	var tags []string
	ref := env("GITHUB_REF")
	switch {
	case ref != "":
	case env("CI_MERGE_REQUEST_IID") != "":
		ref = "refs/pull/" + env("CI_MERGE_REQUEST_IID") + "/merge"
	case env("CI_COMMIT_TAG") != "":
		ref = "refs/tags/" + env("CI_COMMIT_TAG")
	case env("CI_COMMIT_BRANCH") != "":
		ref = "refs/heads/" + env("CI_COMMIT_BRANCH")
	default:
		if t := semverTagAt(git("tag", "--points-at", "HEAD")); t != "" {
			ref = "refs/tags/" + t
		} else if b := git("symbolic-ref", "--short", "-q", "HEAD"); b != "" {
			ref = "refs/heads/" + b
		}
	}
	switch {
	case strings.HasPrefix(ref, "refs/tags/"):
		tags = append(tags, tagTags(strings.TrimPrefix(ref, "refs/tags/"))...)
	case strings.HasPrefix(ref, "refs/heads/"):
		tags = append(tags, sanitize(strings.TrimPrefix(ref, "refs/heads/")))
	case strings.HasPrefix(ref, "refs/pull/"):
		n, _, _ := strings.Cut(strings.TrimPrefix(ref, "refs/pull/"), "/")
		tags = append(tags, "pr-"+n)
	}
	short := sha
	if len(short) > 7 {
		short = short[:7]
	}
	return append(tags, "sha-"+short), nil
}

// semverTagAt picks a semver tag from git tag --points-at's lines, or the
// first tag.
func semverTagAt(lines string) string {
	var first string
	for _, t := range strings.Fields(lines) {
		if semver.MatchString(t) {
			return t
		}
		if first == "" {
			first = t
		}
	}
	return first
}

func tagTags(tag string) []string {
	m := semver.FindStringSubmatch(tag)
	if m == nil {
		return []string{sanitize(tag)}
	}
	full := m[1] + "." + m[2] + "." + m[3] + m[4]
	if m[4] != "" { // a pre-release: its own version only
		return []string{sanitize(full)}
	}
	return []string{full, m[1] + "." + m[2], m[1], "latest"}
}

var notTagChars = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// sanitize makes a ref name a valid tag, as metadata-action does.
func sanitize(s string) string {
	s = notTagChars.ReplaceAllString(s, "-")
	s = strings.TrimLeft(s, ".-")
	if len(s) > 128 {
		s = s[:128]
	}
	return s
}

// readTagList reads tags one per line (blank lines and # comments
// skipped) from a file, or standard input for "-".
func readTagList(file string) ([]string, error) {
	var r io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out, sc.Err()
}
