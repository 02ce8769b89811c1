package layers

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ReadFile finds the file name in the image whose layers are ls (bottom
// first) by reading layers from the top down, and stops at the first layer
// that has it, deletes it or hides it behind an opaque directory. Lower
// layers are never fetched. Symlinks are not followed; found is false when
// the file is absent.
func ReadFile(ctx context.Context, ls []v1.Layer, name string) (data []byte, found bool, err error) {
	name, err = cleanName(name)
	if err != nil {
		return nil, false, err
	}
	for i := len(ls) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		data, state, err := findIn(ls[i], name)
		if err != nil {
			return nil, false, fmt.Errorf("reading layer %d: %w", i+1, err)
		}
		switch state {
		case present:
			return data, true, nil
		case hidden:
			return nil, false, nil
		}
	}
	return nil, false, nil
}

type findState int

const (
	absent findState = iota
	present
	hidden
)

func findIn(l v1.Layer, name string) ([]byte, findState, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, absent, err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	state := absent
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, state, nil
		}
		if err != nil {
			return nil, absent, err
		}
		n, err := cleanName(h.Name)
		if err != nil {
			return nil, absent, err
		}
		dir, base := splitName(n)
		switch {
		case n == name && h.Typeflag == tar.TypeReg:
			data, err := io.ReadAll(tr)
			return data, present, err
		case n == name:
			return nil, hidden, nil // not a regular file here
		case base == whOpaque && isAncestor(dir, name),
			strings.HasPrefix(base, whPrefix) && isAncestor(path.Join(dir, strings.TrimPrefix(base, whPrefix)), name),
			strings.HasPrefix(base, whPrefix) && path.Join(dir, strings.TrimPrefix(base, whPrefix)) == name:
			state = hidden // unless the same layer also holds the file
		}
	}
}

func isAncestor(dir, name string) bool {
	return dir == "" || strings.HasPrefix(name, dir+"/")
}
