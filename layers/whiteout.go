package layers

import (
	"path"
	"strings"
)

// Whiteout markers, as the OCI image spec names them.
const (
	whPrefix = ".wh."
	whOpaque = ".wh..wh..opq"
)

// marker tells what the layer entry n (a clean name) deletes of the layers
// below it: for .wh.NAME, the path NAME with all below it; for
// .wh..wh..opq, the contents of its directory (opaque). ok is false for an
// ordinary entry.
func marker(n string) (p string, opaque, ok bool) {
	dir, base := splitName(n)
	switch {
	case base == whOpaque:
		return dir, true, true
	case strings.HasPrefix(base, whPrefix):
		return path.Join(dir, strings.TrimPrefix(base, whPrefix)), false, true
	}
	return "", false, false
}

// deletions are what one layer removes of the layers below it.
type deletions struct {
	gone   []string // paths deleted, with all below them
	opaque []string // directories whose lower contents are hidden
}

// note records the entry n when it is a marker, and tells whether it was.
func (d *deletions) note(n string) bool {
	p, opaque, ok := marker(n)
	switch {
	case !ok:
	case opaque:
		d.opaque = append(d.opaque, p)
	default:
		d.gone = append(d.gone, p)
	}
	return ok
}

// hides tells whether these deletions remove name of the layers below.
func (d *deletions) hides(name string) bool {
	for _, g := range d.gone {
		if name == g || strings.HasPrefix(name, g+"/") {
			return true
		}
	}
	for _, o := range d.opaque {
		if o == "" || strings.HasPrefix(name, o+"/") {
			return true
		}
	}
	return false
}
