package layers

import (
	"archive/tar"
	"context"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ReadFiles finds the regular files names in the image whose layers are ls
// (bottom first) by reading layers from the top down, one pass a layer for
// all names. It stops as soon as every name is settled: found, deleted, or
// hidden behind an opaque directory; lower layers are never fetched.
// Symlinks are not followed. Absent files are missing from the result.
func ReadFiles(ctx context.Context, ls []v1.Layer, names ...string) (map[string][]byte, error) {
	found := map[string][]byte{}
	err := scan(ctx, ls, names, func(h *tar.Header, r io.Reader) error {
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		data, err := io.ReadAll(r)
		found[h.Name] = data
		return err
	})
	return found, err
}

// scan reads layers top-down until each of names is settled, and calls
// found for those that are present, with the entry's contents.
func scan(ctx context.Context, ls []v1.Layer, names []string, found func(*tar.Header, io.Reader) error) error {
	want := map[string]bool{}
	for _, n := range names {
		c, err := cleanName(n)
		if err != nil {
			return err
		}
		want[c] = true
	}
	for i := len(ls) - 1; i >= 0 && len(want) > 0; i-- {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := scanLayer(ls[i], want, found); err != nil {
			return fmt.Errorf("reading layer %d: %w", i+1, err)
		}
	}
	return nil
}

// scanLayer settles the names in want that layer l decides, passing those
// it holds to found and deleting settled names from want.
func scanLayer(l v1.Layer, want map[string]bool, found func(*tar.Header, io.Reader) error) error {
	return readLayer(l, func(tr *tar.Reader) error { return scanTar(tr, want, found) })
}

func scanTar(tr *tar.Reader, want map[string]bool, found func(*tar.Header, io.Reader) error) error {
	var del deletions
	for len(want) > 0 {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		n, err := cleanName(h.Name)
		if err != nil {
			return err
		}
		if want[n] {
			h.Name = n
			if err := found(h, tr); err != nil {
				return err
			}
			delete(want, n) // present here, as a file or as something else
			continue
		}
		del.note(n)
	}
	for w := range want {
		if del.hides(w) { // and this layer does not hold w itself
			delete(want, w)
		}
	}
	return nil
}
