package assemble

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// gitSource is an ADD source that names a git repository, as BuildKit
// reads one: REMOTE[#REF[:SUBDIR]] or REMOTE?ref=REF&subdir=SUBDIR.
type gitSource struct {
	remote, ref, subdir string
}

func parseGit(src string) (*gitSource, error) {
	g := &gitSource{remote: src}
	if i := strings.IndexByte(src, '#'); i >= 0 {
		g.remote = src[:i]
		g.ref, g.subdir, _ = strings.Cut(src[i+1:], ":")
	} else if u, err := url.Parse(src); err == nil && u.RawQuery != "" && (u.Query().Has("ref") || u.Query().Has("subdir")) {
		g.ref, g.subdir = u.Query().Get("ref"), u.Query().Get("subdir")
		u.RawQuery = ""
		g.remote = u.String()
	}
	if g.remote == "" {
		return nil, fmt.Errorf("%s: no repository", src)
	}
	g.subdir = strings.TrimPrefix(path.Clean("/"+g.subdir), "/")
	return g, nil
}

// checkout is a repository checked out at a commit.
type checkout struct {
	dir    string // the tree ADD copies: the checkout, or its subdir
	commit string
	subdir string
}

// clone checks a repository out once per build (whatever the platforms):
// its ref (default: the remote's HEAD), submodules too, without .git
// unless keepGitDir.
func (b *builder) clone(ctx context.Context, g *gitSource, keepGitDir bool) (*checkout, error) {
	id := fmt.Sprintf("%s#%s keep=%v", g.remote, g.ref, keepGitDir)
	co, err := shared(b, b.checkouts, id, func() (*checkout, error) {
		dir, err := os.MkdirTemp(b.workDir, "git-")
		if err != nil {
			return nil, err
		}
		repo := filepath.Join(dir, "repo")
		git := func(args ...string) (string, error) {
			cmd := exec.CommandContext(ctx, "git", args...)
			cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=true")
			out, err := cmd.CombinedOutput()
			if err != nil {
				return "", fmt.Errorf("git %s: %v: %s", args[0], err, strings.TrimSpace(string(out)))
			}
			return strings.TrimSpace(string(out)), nil
		}
		if _, err := exec.LookPath("git"); err != nil {
			return nil, fmt.Errorf("ADD of a git repository needs git (apt-get install git)")
		}
		if _, err := git("clone", "--quiet", "--no-checkout", g.remote, repo); err != nil {
			return nil, err
		}
		ref := g.ref
		if ref == "" {
			ref = "HEAD"
		}
		if _, err := git("-C", repo, "-c", "advice.detachedHead=false", "checkout", "--quiet", ref); err != nil {
			return nil, err
		}
		if _, err := git("-C", repo, "submodule", "update", "--quiet", "--init", "--recursive"); err != nil {
			return nil, err
		}
		commit, err := git("-C", repo, "rev-parse", "HEAD")
		if err != nil {
			return nil, err
		}
		if !keepGitDir {
			if err := os.RemoveAll(filepath.Join(repo, ".git")); err != nil {
				return nil, err
			}
		}
		return &checkout{dir: repo, commit: commit}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", g.remote, err)
	}
	tree := filepath.Join(co.dir, filepath.FromSlash(g.subdir))
	if fi, err := os.Stat(tree); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%s has no directory %s at %s", g.remote, g.subdir, co.commit)
	}
	return &checkout{dir: tree, commit: co.commit, subdir: g.subdir}, nil
}
