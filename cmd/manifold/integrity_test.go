package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// crcLayer is a gzip layer whose CRC is wrong: its blob's digest is right
// (a registry takes it), its diff_id is what the tar hashes to.
type crcLayer struct{ blob, tarball []byte }

func newCRCLayer(t *testing.T) *crcLayer {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	data := bytes.Repeat([]byte("corrupt?\n"), 1000)
	tw.WriteHeader(&tar.Header{Name: "etc/motd", Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
	tw.Write(data)
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tb.Bytes())
	zw.Close()
	blob := gz.Bytes()
	blob[len(blob)-8] ^= 0xff
	return &crcLayer{blob: blob, tarball: tb.Bytes()}
}

func (l *crcLayer) Digest() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(l.blob))
	return h, err
}
func (l *crcLayer) DiffID() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(l.tarball))
	return h, err
}
func (l *crcLayer) Size() (int64, error)                { return int64(len(l.blob)), nil }
func (l *crcLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l *crcLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}
func (l *crcLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.tarball)), nil
}

// An image with a corrupt layer on top: run and a build with a RUN step
// refuse it, naming the image, platform, layer and digest; the build
// leaves no tag.
func TestCorruptLayerIsNamed(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64")
	img, err := remote.Image(base)
	if err != nil {
		t.Fatal(err)
	}
	bad := newCRCLayer(t)
	img, err = mutate.Append(img, mutate.Addendum{Layer: bad})
	if err != nil {
		t.Fatal(err)
	}
	corrupt := host + "/library/corrupt:1"
	if err := remote.Write(mustRef(t, corrupt), img); err != nil {
		t.Fatal(err)
	}
	d, _ := bad.Digest()
	ls, _ := img.Layers()
	want := []string{corrupt, "(linux/amd64)", fmt.Sprintf("layer %d (%s)", len(ls), d), "invalid checksum"}

	code, _, errOut := manifold(t, "run", "--platform", "linux/amd64", corrupt, "true")
	if code != 1 {
		t.Errorf("run: exit %d, want 1", code)
	}
	for _, w := range want {
		if !strings.Contains(errOut, w) {
			t.Errorf("run's error %q lacks %q", errOut, w)
		}
	}

	tag := host + "/app/on-corrupt:1"
	code, _, errOut = manifold(t, "build", "--platform", "linux/amd64", "-t", tag, "--push",
		contextDir(t, "FROM "+corrupt+"\nRUN true\n"))
	if code != 1 || !strings.Contains(errOut, "Dockerfile:2") {
		t.Errorf("build: exit %d, %q; want 1 and the RUN's line", code, errOut)
	}
	for _, w := range want {
		if !strings.Contains(errOut, w) {
			t.Errorf("build's error %q lacks %q", errOut, w)
		}
	}
	if _, err := remote.Head(mustRef(t, tag)); err == nil {
		t.Error("the failed build left its tag")
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
