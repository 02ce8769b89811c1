package assemble

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/manifold-build/manifold/layers"
)

// unpacked tells whether the stage's files are on disk already.
func (s *state) unpacked() bool { return s.dirLayers == len(s.layers) && len(s.dirs) > 0 }

// readFiles reads files of the stage: from its unpacked tree when there is
// one, else from its layers top-down through the catalog, fetching no
// layer below those that settle them, and none twice. Absent files are
// missing from the result.
func (s *state) readFiles(ctx context.Context, names ...string) (map[string][]byte, error) {
	if !s.unpacked() {
		return s.b.catalog.ReadFiles(ctx, s.layers, names...)
	}
	out := map[string][]byte{}
	for _, n := range names {
		p, err := s.hostPath("/" + n)
		if err != nil {
			continue
		}
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[n] = data
	}
	return out, nil
}

// hostPath finds where the stage path p lives on the host, in the stage's
// stack of directories, as the overlay would show it.
func (s *state) hostPath(p string) (string, error) {
	return layers.Lookup(s.dirs, p)
}

// copySource is the tree a COPY reads: the context, or with --from a stage
// or an image (for the stage's platform), unpacked.
func (s *state) copySource(ctx context.Context, in *Instruction) (*sourceFS, error) {
	if _, ok := in.Flags["from"]; !ok {
		return s.b.ctxDir.source(), nil
	}
	f, err := s.copyFrom(ctx, in)
	if err != nil {
		return nil, err
	}
	dir, err := s.b.sandbox.unpacked(ctx, f.layers)
	if err != nil {
		return nil, fmt.Errorf("unpacking --from=%s: %w", f.name, err)
	}
	return &sourceFS{root: dir, ignored: func(string) bool { return false }, skipDirs: true, keepIDs: true, confined: true, describe: "--from=" + f.name}, nil
}

// fromTree is what a COPY --from names: its layers, and what identifies
// them for a cache key (another stage by its key, an image by its
// platform's manifest digest).
type fromTree struct {
	name, id string
	layers   []v1.Layer
}

// copyFrom resolves a COPY --from to a stage or an image, reading no layer.
func (s *state) copyFrom(ctx context.Context, in *Instruction) (*fromTree, error) {
	from, err := s.expand(in.Flags["from"])
	if err != nil {
		return nil, err
	}
	return s.tree(ctx, from)
}

// tree resolves a stage's name or index, or an image, to its files for
// this stage's platform, reading no layer.
func (s *state) tree(ctx context.Context, from string) (*fromTree, error) {
	if st := s.b.df.stageRef(from, s.stage.Index); st != nil {
		other, err := s.b.stage(ctx, st, s.target)
		if err != nil {
			return nil, err
		}
		return &fromTree{name: from, id: "stage:" + other.key, layers: other.layers}, nil
	}
	src, err := s.b.source(ctx, from)
	if err != nil {
		return nil, err
	}
	img, desc, err := src.ForPlatform(s.platform)
	if err != nil {
		return nil, err
	}
	ls, err := img.Layers()
	if err != nil {
		return nil, err
	}
	return &fromTree{name: from, id: "image:" + desc.Digest.String(), layers: ls}, nil
}

// copyInputs names what a COPY or ADD reads, for its cache key: context
// files by their names, modes, sizes, link targets and contents; a --from
// tree by its id.
func (s *state) copyInputs(ctx context.Context, in *Instruction, srcs []string) (string, error) {
	if _, ok := in.Flags["from"]; !ok {
		d, err := s.b.contextDigest(srcs)
		return "context:" + d, err
	}
	f, err := s.copyFrom(ctx, in)
	if err != nil {
		return "", err
	}
	return f.id, nil
}

// contextDigest hashes the context files srcs select, once per build.
func (b *builder) contextDigest(srcs []string) (string, error) {
	return shared(b, b.digests, strings.Join(srcs, "\x00"), func() (string, error) { return b.ctxDir.source().digest(srcs) })
}

// digest hashes the files that srcs select, as COPY would read them.
func (sf *sourceFS) digest(srcs []string) (string, error) {
	h := sha256.New()
	for _, src := range srcs {
		matches, err := sf.match(src)
		if err != nil {
			return "", err
		}
		for _, m := range matches {
			err := sf.walk(m, func(p string, d fs.DirEntry) error { return sf.hashFile(h, p) })
			if err != nil {
				return "", err
			}
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func (sf *sourceFS) hashFile(h io.Writer, rel string) error {
	p := sf.abs(rel)
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	fmt.Fprintf(h, "%q %o %d", rel, fi.Mode(), fi.Size())
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, " -> %q", target)
	case fi.Mode().IsRegular():
		sum, err := sf.sums.sum(rel, fi, func() (s [sha256.Size]byte, err error) {
			d := sha256.New()
			err = readFile(d, p)
			d.Sum(s[:0])
			return s, err
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(h, " %x", sum)
	}
	_, err = h.Write([]byte{'\n'})
	return err
}

// readBufs are the buffers context files go through into their hashes.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// readFile writes the file at p to w, through straight system calls: an
// *os.File would add a poller registration, and io.Copy a 32 KiB buffer,
// for each of thousands of small files.
func readFile(w io.Writer, p string) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	buf := readBufs.Get().(*[]byte)
	defer readBufs.Put(buf)
	for {
		n, err := unix.Read(fd, *buf)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return &fs.PathError{Op: "read", Path: p, Err: err}
		case n == 0:
			return nil
		}
		if _, err := w.Write((*buf)[:n]); err != nil {
			return err
		}
	}
}
