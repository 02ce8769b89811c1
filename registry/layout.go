package registry

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// WriteLayout writes idx as an OCI image layout in dir, named by tags in
// index.json the way BuildKit's oci exporter names them.
func WriteLayout(dir string, idx v1.ImageIndex, tags []name.Reference) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	var opts []layout.Option
	if len(tags) > 0 {
		opts = append(opts, layout.WithAnnotations(map[string]string{refNameAnnotation: tags[0].Name()}))
	}
	return p.AppendIndex(idx, opts...)
}

// WriteOCITar writes idx as an OCI image layout packed in a tar file.
func WriteOCITar(file string, idx v1.ImageIndex, tags []name.Reference) error {
	tmp, err := os.MkdirTemp(filepath.Dir(file), ".manifold-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := WriteLayout(tmp, idx, tags); err != nil {
		return err
	}
	part := file + ".part"
	f, err := os.Create(part)
	if err != nil {
		return err
	}
	if err := tarTree(f, tmp); err != nil {
		f.Close()
		os.Remove(part)
		return fmt.Errorf("writing %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(part, file)
}

func tarTree(w io.Writer, dir string) error {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(files)
	tw := tar.NewWriter(w)
	for _, p := range files {
		if err := tarFile(tw, dir, p); err != nil {
			return err
		}
	}
	return tw.Close()
}

// tarFile streams one file of the layout into the tarball: blobs can be
// layers of any size.
func tarFile(tw *tar.Writer, dir, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(dir, p)
	if err != nil {
		return err
	}
	h := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, Size: fi.Size(), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

// layoutScheme marks a reference to an OCI image layout, as BuildKit writes
// them: oci-layout://DIR[:TAG].
const layoutScheme = "oci-layout://"

// openLayout opens DIR[:TAG]: the manifest index.json names TAG (or a name
// ending in :TAG), or with no TAG the only one there is.
func openLayout(spec string) (*Source, error) {
	dir, tag := spec, ""
	if i := strings.LastIndexByte(spec, ':'); i > strings.LastIndexByte(spec, '/') {
		dir, tag = spec[:i], spec[i+1:]
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("opening OCI layout %s: %w", dir, err)
	}
	if tag == "" {
		ii, err := p.ImageIndex()
		if err != nil {
			return nil, err
		}
		m, err := ii.IndexManifest()
		if err != nil {
			return nil, err
		}
		if len(m.Manifests) != 1 {
			return nil, fmt.Errorf("OCI layout %s holds %d images: name one as oci-layout://%s:TAG", dir, len(m.Manifests), dir)
		}
	}
	src, ok, err := lookupLayout(p, layoutScheme+spec, func(n string) bool {
		return tag == "" || n == tag || strings.HasSuffix(n, ":"+tag)
	})
	if err == nil && !ok {
		err = fmt.Errorf("OCI layout %s holds no image named %q", dir, tag)
	}
	return src, err
}
