package assemble

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/manifold-build/manifold/layers"
)

// contextDir is the build context: a directory and its .dockerignore.
type contextDir struct {
	root   string
	mu     sync.Mutex                     // the matcher compiles lazily: one caller at a time
	ignore *patternmatcher.PatternMatcher // nil: nothing ignored
	sums   *contextSums                   // the files' digests of earlier builds; nil: none
}

func openContext(dir string) (*contextDir, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("build context %s is not a directory", dir)
	}
	cd := &contextDir{root: dir}
	f, err := os.Open(filepath.Join(dir, ".dockerignore"))
	if errors.Is(err, fs.ErrNotExist) {
		return cd, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("reading .dockerignore: %w", err)
	}
	if cd.ignore, err = patternmatcher.New(patterns); err != nil {
		return nil, fmt.Errorf(".dockerignore: %w", err)
	}
	return cd, nil
}

// ignored tells whether the context-relative path rel is left out.
func (cd *contextDir) ignored(rel string) bool {
	if cd.ignore == nil || rel == "." {
		return false
	}
	cd.mu.Lock()
	defer cd.mu.Unlock()
	ok, err := cd.ignore.MatchesOrParentMatches(rel)
	return err == nil && ok
}

// sourceFS is a tree that COPY reads from: the context or a stage's rootfs.
type sourceFS struct {
	root     string
	ignored  func(rel string) bool
	skipDirs bool // an ignored directory hides all below it (no ! exceptions)
	keepIDs  bool // keep owners (a stage or image), else 0:0 (the context)
	confined bool // a root filesystem: symlinks resolve inside root
	describe string
	sums     *contextSums // the context's, for hashing its files
}

func (cd *contextDir) source() *sourceFS {
	return &sourceFS{root: cd.root, ignored: cd.ignored, describe: "the build context",
		skipDirs: cd.ignore == nil || !cd.ignore.Exclusions(), sums: cd.sums}
}

// match expands a COPY source, which may hold wildcards, to context-relative
// paths. A path never climbs out of the tree: "../x" means "/x".
func (sf *sourceFS) match(src string) ([]string, error) {
	rel := strings.TrimPrefix(path.Clean("/"+filepath.ToSlash(src)), "/")
	if rel == "" {
		rel = "."
	}
	if !strings.ContainsAny(rel, "*?[") {
		if sf.confined {
			rel = sf.resolve(rel)
		}
		if sf.ignored(rel) {
			return nil, fmt.Errorf("%q: excluded by .dockerignore", src)
		}
		if _, err := os.Lstat(sf.abs(rel)); err != nil {
			return nil, fmt.Errorf("%q: not found in %s", src, sf.describe)
		}
		return []string{rel}, nil
	}
	// A wildcard that matches nothing copies nothing, as in BuildKit.
	var out []string
	err := sf.walk(".", func(p string, _ fs.DirEntry) error {
		if ok, _ := path.Match(rel, p); ok {
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

func (sf *sourceFS) abs(rel string) string { return filepath.Join(sf.root, filepath.FromSlash(rel)) }

// walk visits rel and everything below it that is not ignored, in lexical
// order, with paths relative to the tree's root.
func (sf *sourceFS) walk(rel string, fn func(p string, d fs.DirEntry) error) error {
	return filepath.WalkDir(sf.abs(rel), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, err := filepath.Rel(sf.root, p)
		if err != nil {
			return err
		}
		r = filepath.ToSlash(r)
		if r != "." && sf.ignored(r) {
			if d.IsDir() && sf.skipDirs {
				return filepath.SkipDir
			}
			return nil
		}
		return fn(r, d)
	})
}

// resolve follows symlinks in rel inside the tree: a link never leads out
// of it (an absolute or climbing target is taken from the tree's root).
func (sf *sourceFS) resolve(rel string) string {
	hp, err := layers.Lookup([]string{sf.root}, rel)
	if err != nil {
		return rel
	}
	r, err := filepath.Rel(sf.root, hp)
	if err != nil {
		return rel
	}
	return filepath.ToSlash(r)
}
