package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/manifold-build/manifold/emulate/platform"
)

// blobLayer is a layer that says of itself whatever a test wants.
type blobLayer struct {
	blob           []byte
	digest, diffID v1.Hash
}

func (l *blobLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *blobLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *blobLayer) Size() (int64, error)                { return int64(len(l.blob)), nil }
func (l *blobLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l *blobLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}
func (l *blobLayer) Uncompressed() (io.ReadCloser, error) {
	zr, err := gzip.NewReader(bytes.NewReader(l.blob))
	return io.NopCloser(zr), err
}

func sha(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func tarOf(t *testing.T, name string, data []byte) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
	tw.Write(data)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipOf(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// honest is a layer whose digests are what its bytes hash to.
func honest(tarball []byte) *blobLayer {
	gz := gzipOf(tarball)
	return &blobLayer{blob: gz, digest: sha(gz), diffID: sha(tarball)}
}

// inLayout puts a one-layer linux/amd64 image in an OCI layout.
func inLayout(t *testing.T, l v1.Layer) string {
	t.Helper()
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: l})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
		t.Fatal(err)
	}
	return dir
}

// readBase reads the first layer of the image in dir as a build does:
// the tar stream, to its end.
func readBase(t *testing.T, dir string, o Options) error {
	src, err := Open(context.Background(), layoutScheme+dir, o)
	if err != nil {
		t.Fatal(err)
	}
	img, _, err := src.ForPlatform(platform.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := ls[0].Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		if _, err := tr.Next(); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
	}
	_, err = io.Copy(io.Discard, rc) // what a reader of layers does after the tar's end
	return err
}

// Layers that lie about themselves fail the read that finds out, with an
// error naming image, platform, layer and digest.
func TestLayersAreVerifiedOnEveryRead(t *testing.T) {
	tarball := tarOf(t, "etc/motd", bytes.Repeat([]byte("hello\n"), 1000))
	crc := func() *blobLayer { // gzip's CRC is wrong; the blob's digest is right for its bytes
		l := honest(tarball)
		l.blob[len(l.blob)-8] ^= 0xff
		l.digest = sha(l.blob)
		return l
	}
	diffID := func() *blobLayer {
		l := honest(tarball)
		l.diffID = sha([]byte("something else"))
		return l
	}
	digest := func() *blobLayer { // the registry served other bytes than the manifest names
		l := honest(tarball)
		l.digest = sha([]byte("other bytes"))
		return l
	}
	truncated := func() *blobLayer {
		l := honest(tarball)
		l.blob = l.blob[:len(l.blob)-20]
		l.digest = sha(l.blob)
		return l
	}
	for _, tc := range []struct {
		name  string
		layer *blobLayer
		o     Options
		want  string
	}{
		{"honest", honest(tarball), Options{}, ""},
		{"gzip-crc", crc(), Options{}, "gzip: invalid checksum"},
		{"truncated-gzip", truncated(), Options{}, "unexpected EOF"},
		{"diff-id", diffID(), Options{}, "uncompressed digest sha256:" + sha(tarball).Hex},
		{"digest", digest(), Options{}, "compressed digest"},
		{"budget", honest(tarOf(t, "zeros", make([]byte, 4<<20))), Options{MaxUnpacked: 1 << 20}, "unpack to more than 1 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := inLayout(t, tc.layer)
			err := readBase(t, dir, tc.o)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("read without error, want %q", tc.want)
			}
			for _, part := range []string{tc.want, "oci-layout://" + dir, "(linux/amd64)", "layer 1 (" + tc.layer.digest.String() + ")"} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q lacks %q", err, part)
				}
			}
			if tc.name != "budget" && !errors.Is(err, ErrIntegrity) {
				t.Errorf("error %v is no ErrIntegrity", err)
			}
		})
	}
}

// A layer whose bytes are not what its digest says is never stored: the
// store's blob of that name is absent after the failed Put.
func TestStoreKeepsNoUnverifiedBlob(t *testing.T) {
	l := honest(tarOf(t, "etc/motd", []byte("hello\n")))
	l.digest = sha([]byte("other bytes"))
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: l})
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img})
	st := &Store{Dir: t.TempDir()}
	tag, _ := name.ParseReference("example.com/lies:1")
	if err := st.Put(idx, []name.Reference{tag}); err == nil || !errors.Is(err, ErrIntegrity) {
		t.Fatalf("Put: %v, want an integrity error", err)
	}
	if _, err := os.Stat(filepath.Join(st.Dir, "blobs", "sha256", l.digest.Hex)); err == nil {
		t.Error("the store holds a blob that is not what its name says")
	}
}
