package assemble

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/moby/patternmatcher"
	"github.com/ulikunitz/xz"

	"github.com/manifold-build/manifold/layers"
)

// copy runs COPY and ADD: the selected files become one new layer.
func (s *state) copy(ctx context.Context, in *Instruction) error {
	kw := strings.ToUpper(in.Cmd)
	if len(in.Args) < 1 || len(in.Args)+len(in.Heredocs) < 2 {
		return fmt.Errorf("%s needs at least one source and a destination", kw)
	}
	args := make([]string, len(in.Args))
	for i, a := range in.Args {
		v, err := s.expand(a)
		if err != nil {
			return err
		}
		args[i] = v
	}
	srcs, dest := args[:len(args)-1], args[len(args)-1]
	srcs, urls, repo, err := s.splitURLs(ctx, in, srcs)
	if err != nil {
		return err
	}
	if strings.Contains(in.Flags["from"], "$") {
		// BuildKit's words: it resolves --from before any ARG.
		return errors.New("variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround")
	}
	mode, err := parseChmod(in.Flags["chmod"])
	if err != nil {
		return err
	}
	chown, err := s.expand(in.Flags["chown"])
	if err != nil {
		return err
	}
	docs, err := s.documents(in)
	if err != nil {
		return err
	}
	from, err := s.copyInputs(ctx, in, srcs)
	if err != nil {
		return err
	}
	if repo != nil {
		if len(docs) > 0 {
			return errors.New("ADD of a git repository takes it as its only source")
		}
		from = "git:" + repo.commit + ":" + repo.subdir
		srcs = []string{"."}
	}
	// The parent's key settles what the stage holds (a destination's type,
	// the users --chown names), so the flags go in as written.
	k := key(s.key, in.Cmd, srcs, s.resolve(dest), strings.HasSuffix(dest, "/"), chown, in.Flags["chmod"], from, docs, keyOf(urls))
	return s.cached(k, in, func() (*stepResult, error) {
		l, err := s.copyLayer(ctx, in, srcs, docs, urls, repo, dest, mode, from)
		return &stepResult{layer: l, createdBy: in.String() + " # buildkit"}, err
	})
}

// copyLayer makes a COPY or ADD step's layer.
// Platforms whose COPY reads the same files into the same place with the
// same owners get the same layer: it is made once (from names what the
// files are).
func (s *state) copyLayer(ctx context.Context, in *Instruction, srcs []string, docs []document, urls []*download, repo *checkout, dest string, mode *fs.FileMode, from string) (v1.Layer, error) {
	sf, err := s.copySource(ctx, in)
	if err != nil {
		return nil, err
	}
	if repo != nil { // ADD of a git repository: its tree's contents
		sf = &sourceFS{root: repo.dir, ignored: func(string) bool { return false }, describe: "the repository"}
	}
	ids, err := s.owner(ctx, in.Flags["chown"])
	if err != nil {
		return nil, err
	}
	c := &copier{sf: sf, ids: ids, mode: mode, add: in.Cmd == "add", unpack: in.Flags["unpack"] != "false"}
	if ex := in.FlagList["exclude"]; len(ex) > 0 {
		if c.exclude, err = patternmatcher.New(ex); err != nil {
			return nil, fmt.Errorf("--exclude: %w", err)
		}
	}
	parents := boolFlag(in, "parents")
	c.scratch = s.b.workDir
	c.toDir = strings.HasSuffix(dest, "/") || path.Base(dest) == "." || path.Base(dest) == ".." || len(srcs)+len(docs)+len(urls) > 1 || parents
	if c.dest, err = s.realPath(ctx, s.resolve(dest)); err != nil {
		return nil, err
	}
	if c.known, err = s.pathHeaders(ctx, c.dest); err != nil {
		return nil, err
	}
	if h := c.known[c.dest]; !c.toDir && h != nil && h.Typeflag == tar.TypeDir {
		c.toDir = true
	}
	opts := s.layerOptions()
	k := key("", "layer", in.Cmd, from, srcs, docs, keyOf(urls), c.dest, c.toDir, ids, in.Flags["chmod"], in.FlagList["exclude"], parents, c.unpack, opts.MediaType, opts.Compression, s.b.o.Epoch, headersKey(c.known))
	return s.b.layer(k, func() (v1.Layer, error) {
		dir := path.Dir(c.dest)
		if c.toDir {
			dir = c.dest
		}
		if err := c.createDirs(dir); err != nil {
			return nil, err
		}
		for _, src := range srcs {
			copyOne := c.source
			if parents {
				copyOne = c.parentsSource
			}
			if err := copyOne(src); err != nil {
				return nil, err
			}
		}
		for _, d := range docs {
			if err := c.document(d); err != nil {
				return nil, err
			}
		}
		for _, d := range urls {
			if err := c.remote(d); err != nil {
				return nil, err
			}
		}
		if c.nth == 0 && len(docs)+len(urls) == 0 {
			c.entries = nil // wildcards that matched nothing make no directory either
		}
		return layers.New(func(tw *tar.Writer) error { return layers.Write(tw, c.entries, s.b.o.Epoch) }, opts)
	})
}

func (s *state) layerOptions() layers.Options {
	return layers.Options{Compression: s.b.o.Compression, MediaType: layers.MediaTypeFor(s.mediaType, s.b.o.Compression), Dir: s.b.layerDir}
}

// realPath is p in the stage with the symlinks of every component
// followed, its last one too, as BuildKit resolves a COPY's destination
// and a WORKDIR ("/" for the root): in the unpacked tree when there is
// one, else in the layers from the top down, until they settle it.
func (s *state) realPath(ctx context.Context, p string) (string, error) {
	var rel string
	var err error
	if s.unpacked() {
		rel, err = layers.ResolveStack(s.dirs, p)
	} else {
		rel, err = s.b.catalog.Resolve(ctx, s.layers, p)
	}
	return "/" + rel, err
}

// header tells what the stage holds at the real path p (not the root), as
// a layer entry's header: nil when nothing is there.
func (s *state) header(ctx context.Context, p string) (*tar.Header, error) {
	rel := strings.TrimPrefix(path.Clean("/"+p), "/")
	if s.unpacked() {
		return layers.StatStack(s.dirs, rel)
	}
	return s.b.catalog.Stat(ctx, s.layers, rel)
}

// pathHeaders looks up p and each of its parents in the stage: what a
// layer that writes at p must list them as (nil: not there).
func (s *state) pathHeaders(ctx context.Context, p string) (map[string]*tar.Header, error) {
	out := map[string]*tar.Header{}
	for ; p != "/" && p != "."; p = path.Dir(p) {
		h, err := s.header(ctx, p)
		if err != nil {
			return nil, err
		}
		out[p] = h
	}
	return out, nil
}

type copier struct {
	known   map[string]*tar.Header // the stage's entries at the destination and its parents (nil: none)
	scratch string                 // where extracted files wait for the layer
	nth     int                    // which source is being copied
	made    map[string]bool        // directories given an entry
	sf      *sourceFS
	ids     *idPair
	mode    *fs.FileMode
	add     bool
	unpack  bool                           // ADD extracts local archives (--unpack, default true)
	exclude *patternmatcher.PatternMatcher // --exclude, within directory sources and what --parents copies; nil: none
	within  string                         // --parents: where the directory being copied is below the pivot
	dest    string
	toDir   bool
	entries []layers.Entry
}

type idPair struct{ UID, GID int }

// splitURLs takes an ADD's URL and git sources out of srcs, fetching them
// (their contents, dates and commits go into the step's key) and checking
// --checksum; a URL in a COPY is refused.
func (s *state) splitURLs(ctx context.Context, in *Instruction, srcs []string) ([]string, []*download, *checkout, error) {
	checksum := in.Flags["checksum"]
	if checksum != "" && !strings.HasPrefix(checksum, "sha256:") && !isGitSource(in, srcs) {
		return nil, nil, nil, fmt.Errorf("--checksum=%s: want sha256:<64 hex digits>", checksum)
	}
	var local []string
	var urls []*download
	var repo *checkout
	for _, src := range srcs {
		switch {
		case isGit(src) && in.Cmd == "add":
			if len(srcs) > 1 {
				return nil, nil, nil, errors.New("ADD of a git repository takes it as its only source")
			}
			g, err := parseGit(src)
			if err != nil {
				return nil, nil, nil, err
			}
			if repo, err = s.b.clone(ctx, g, boolFlag(in, "keep-git-dir")); err != nil {
				return nil, nil, nil, err
			}
			if checksum != "" && !strings.HasPrefix(repo.commit, checksum) {
				return nil, nil, nil, fmt.Errorf("%s: checksum mismatch: the checkout is commit %s, --checksum says %s", src, repo.commit, checksum)
			}
		case isURL(src) && in.Cmd != "add":
			return nil, nil, nil, fmt.Errorf("COPY cannot fetch a URL (%s): ADD can", src)
		case isURL(src):
			d, err := s.b.download(ctx, src, checksum)
			if err != nil {
				return nil, nil, nil, err
			}
			urls = append(urls, d)
		default:
			local = append(local, src)
		}
	}
	if checksum != "" && len(local) > 0 {
		return nil, nil, nil, errors.New("ADD --checksum is for URL and git sources only")
	}
	return local, urls, repo, nil
}

func isGitSource(in *Instruction, srcs []string) bool {
	return in.Cmd == "add" && len(srcs) == 1 && isGit(srcs[0])
}

// boolFlag tells whether in was given --name or --name=true.
func boolFlag(in *Instruction, name string) bool {
	v, ok := in.Flags[name]
	return ok && (v == "" || v == "true")
}

// document is a COPY's or ADD's heredoc: a file of the given content,
// named by its delimiter.
type document struct{ Name, Content string }

// documents are in's heredocs, $VARs expanded where the delimiter was
// unquoted (BuildKit's raw expansion: quotes stay text).
func (s *state) documents(in *Instruction) ([]document, error) {
	var out []document
	for _, h := range in.Heredocs {
		text := h.Text()
		if h.Expand {
			var err error
			if text, err = s.b.df.expandRaw(text, s.env()); err != nil {
				return nil, err
			}
		}
		out = append(out, document{h.Name, text})
	}
	return out, nil
}

// document adds a heredoc's file: 0644 (or --chmod), root's (or
// --chown's), made now, as BuildKit makes it.
func (c *copier) document(d document) error {
	target := c.dest
	if c.toDir {
		target = path.Join(c.dest, d.Name)
	}
	h := tar.Header{Name: target, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(d.Content)), ModTime: time.Now()}
	if c.mode != nil {
		h.Mode = int64(*c.mode)
	}
	if c.ids != nil {
		h.Uid, h.Gid = c.ids.UID, c.ids.GID
	}
	c.entries = append(c.entries, layers.Entry{Header: h, Data: []byte(d.Content)})
	return nil
}

// excluded tells whether --exclude leaves out rel, relative to the
// directory a source copies (a file a source names itself is never left
// out, as in BuildKit).
func (c *copier) excluded(rel string) bool {
	if c.exclude == nil || rel == "" || rel == "." {
		return false
	}
	ok, _ := c.exclude.MatchesOrParentMatches(rel)
	return ok
}

// relTo is p relative to the directory base ("" or "." for the root).
func relTo(base, p string) string {
	if base == "" || base == "." {
		return p
	}
	return strings.TrimPrefix(p, base+"/")
}

// parentsSource copies src as COPY --parents does: keeping its directories
// below the context's root, or below a /./ pivot in it.
func (c *copier) parentsSource(src string) error {
	root, pattern, pivot := strings.Cut(src, "/./")
	if !pivot {
		root, pattern = "", src
	}
	root = strings.TrimPrefix(path.Clean("/"+root), "/")
	matches, err := c.sf.match(path.Join(root, pattern))
	if err != nil {
		return err
	}
	for _, m := range matches {
		rel := relTo(root, m)
		if c.excluded(rel) {
			continue
		}
		var dirs []string
		for d := path.Dir(rel); d != "." && d != "/"; d = path.Dir(d) {
			dirs = append([]string{d}, dirs...)
		}
		for _, d := range dirs {
			target := path.Join(c.dest, d)
			if c.made[target] {
				continue
			}
			if err := c.entry(path.Join(root, d), target); err != nil {
				return err
			}
			c.mark(target)
		}
		if fi, err := os.Lstat(c.sf.abs(m)); err == nil && fi.IsDir() && !c.made[path.Join(c.dest, rel)] {
			if err := c.entry(m, path.Join(c.dest, rel)); err != nil {
				return err
			}
			c.mark(path.Join(c.dest, rel))
		}
		saved := c.dest
		c.dest, c.toDir, c.within = path.Join(saved, rel), false, rel
		err := c.one(m)
		c.dest, c.toDir, c.within = saved, true, ""
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *copier) mark(dir string) {
	if c.made == nil {
		c.made = map[string]bool{}
	}
	c.made[dir] = true
}

func (c *copier) source(src string) error {
	matches, err := c.sf.match(src)
	if err != nil {
		return err
	}
	if len(matches) > 1 {
		c.toDir = true
	}
	for _, m := range matches {
		if err := c.one(m); err != nil {
			return err
		}
	}
	return nil
}

// one copies one source (a named path or a wildcard's match). A source
// that is a symlink is followed, inside its tree, as BuildKit follows it;
// links inside a copied directory stay links. Files hardlinked within one
// source stay linked; separate sources never are.
func (c *copier) one(name string) error {
	c.nth++
	rel := name
	fi, err := os.Lstat(c.sf.abs(rel))
	if err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		rel = c.sf.resolve(rel)
		fi, err = os.Lstat(c.sf.abs(rel))
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return c.sf.walk(rel, func(p string, d fs.DirEntry) error {
			sub := ""
			switch {
			case p == rel:
				return c.createDirs(c.dest) // the directory the contents go into
			case rel == ".":
				sub = p
			default:
				sub = strings.TrimPrefix(p, rel+"/")
			}
			if c.excluded(path.Join(c.within, sub)) {
				if d.IsDir() && !c.exclude.Exclusions() {
					return filepath.SkipDir
				}
				return nil
			}
			return c.entry(p, path.Join(c.dest, sub))
		})
	}
	if c.add && c.unpack && fi.Mode().IsRegular() {
		if ok, err := c.extract(c.sf.abs(rel)); ok || err != nil {
			return err
		}
	}
	target := c.dest
	if c.toDir {
		target = path.Join(c.dest, path.Base(name))
	}
	return c.entry(rel, target)
}

// createDirs gives the layer an entry for dir and each of its parents, as
// BuildKit's layer lists them: a directory the stage has as it is there
// (/tmp keeps 1777), one the COPY makes 0755, or the --chmod mode, and the
// --chown owner.
func (c *copier) createDirs(dir string) error {
	if dir == "/" || dir == "." || c.made[dir] {
		return nil
	}
	if err := c.createDirs(path.Dir(dir)); err != nil {
		return err
	}
	h := c.known[dir]
	switch {
	case h == nil:
		h = &tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}
		if c.mode != nil {
			h.Mode = int64(*c.mode)
		}
		if c.ids != nil {
			h.Uid, h.Gid = c.ids.UID, c.ids.GID
		}
	case h.Typeflag != tar.TypeDir:
		return fmt.Errorf("cannot copy into %s: it is not a directory in the image", dir)
	}
	e := layers.Entry{Header: *h}
	e.Name = dir
	c.entries = append(c.entries, e)
	c.mark(dir)
	return nil
}

// headersKey is what the headers that pathHeaders found put into a
// layer's key.
func headersKey(hs map[string]*tar.Header) string {
	var b strings.Builder
	for _, p := range slices.Sorted(maps.Keys(hs)) {
		if h := hs[p]; h != nil {
			fmt.Fprintf(&b, "%s %c %o %d:%d %d %q %v\n", p, h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime.Unix(), h.Linkname, h.PAXRecords)
		}
	}
	return b.String()
}

func (c *copier) entry(rel, target string) error {
	if target == "/" {
		return nil // the root directory itself is not a layer entry
	}
	e, err := layers.EntryFor(c.sf.abs(rel), target)
	if err != nil {
		return err
	}
	if !c.sf.keepIDs {
		e.Uid, e.Gid = 0, 0
	}
	if c.ids != nil {
		e.Uid, e.Gid = c.ids.UID, c.ids.GID
	}
	if c.mode != nil && e.Typeflag != tar.TypeSymlink {
		e.Mode = int64(*c.mode)
	}
	if e.Inode != "" {
		e.Inode = fmt.Sprintf("%d/%s", c.nth, e.Inode)
	}
	c.entries = append(c.entries, e)
	return nil
}

// extract unpacks a local tar archive (plain, gzip, bzip2 or zstd) into the
// destination, as ADD does; ok is false when the file is no archive.
func (c *copier) extract(file string) (ok bool, err error) {
	f, err := os.Open(file)
	if err != nil {
		return false, err
	}
	defer f.Close()
	r, err := decompressed(bufio.NewReader(f))
	if r == nil || err != nil {
		return false, err
	}
	tr := tar.NewReader(r)
	var found []layers.Entry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if len(found) == 0 {
				return false, nil // not a tar after all: copy it as a file
			}
			return false, fmt.Errorf("extracting %s: %w", path.Base(file), err)
		}
		e, err := c.extracted(h, tr)
		if err != nil {
			return false, fmt.Errorf("extracting %s: %w", path.Base(file), err)
		}
		found = append(found, e)
	}
	c.entries = append(c.entries, found...)
	return len(found) > 0, nil
}

// extracted is an archive's entry as ADD writes it: inside the destination
// whatever its name says ("../x" too, as BuildKit keeps it), owned by
// --chown when given, its bytes streamed to a scratch file rather than
// held in memory.
func (c *copier) extracted(h *tar.Header, tr io.Reader) (layers.Entry, error) {
	e := layers.Entry{Header: *h}
	e.Name = path.Join(c.dest, path.Clean("/"+h.Name))
	if h.Typeflag == tar.TypeLink {
		e.Linkname = strings.TrimPrefix(path.Join(c.dest, path.Clean("/"+h.Linkname)), "/")
	}
	if c.ids != nil {
		e.Uid, e.Gid = c.ids.UID, c.ids.GID
	}
	if h.Typeflag != tar.TypeReg {
		return e, nil
	}
	f, err := os.CreateTemp(c.scratch, "add-")
	if err != nil {
		return e, err
	}
	defer f.Close()
	if _, err := io.Copy(f, tr); err != nil {
		return e, err
	}
	e.Source = f.Name()
	return e, f.Close()
}

// decompressed returns a reader of r's plain bytes when r holds a gzip,
// bzip2, xz, zstd or plain tar stream; nil when it holds something else.
func decompressed(r *bufio.Reader) (io.Reader, error) {
	head, _ := r.Peek(512)
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return gzip.NewReader(r)
	case bytes.HasPrefix(head, []byte("BZh")):
		return bzip2.NewReader(r), nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, err
		}
		return zr.IOReadCloser(), nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return xz.NewReader(r)
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		return r, nil
	}
	return nil, nil
}

func parseChmod(s string) (*fs.FileMode, error) {
	if s == "" {
		return nil, nil
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o7777 {
		return nil, fmt.Errorf("invalid --chmod %q: want an octal mode such as 0755", s)
	}
	m := fs.FileMode(n)
	return &m, nil
}
