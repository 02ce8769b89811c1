package assemble_test

import (
	"archive/tar"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/layers"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// A no-RUN build reads only manifests and configs of its base, and of its
// layers only those that settle what its destinations are (from the top
// down: /etc is in the top one), each once; base layers are mounted rather
// than uploaded, and a new layer shared by the platforms is uploaded once.
func TestNoRunBuildFetchesOnlyTheBaseLayersItLooksIn(t *testing.T) {
	host, log := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", true, "linux/amd64", "linux/arm64")
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile": fmt.Sprintf("FROM %s\nLABEL maintainer=dev\nCOPY hello.txt /etc/\nENV GREETING=hi\nCMD [\"cat\", \"/etc/hello.txt\"]\n", base),
		"hello.txt":  "hello\n",
	})
	log.Reset()
	res := mustBuildUnread(t, ctxDir, []string{"linux/arm64", "linux/amd64"}, nil)
	defer assembletest.Validate(t, res) // once the registry's counts are taken
	push(t, res, host+"/team/app:1")

	baseIdx, err := remote.Index(base)
	if err != nil {
		t.Fatal(err)
	}
	baseImg, err := baseIdx.Image(mustDigest(t, baseIdx, "linux/amd64"))
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range digests(t, baseImg) {
		if n := log.BlobGets(d); i == 0 && n != 0 || n > 1 {
			t.Errorf("base layer %d (%s) fetched %d times, want 0 for the bottom one (the programs), at most once for the top one (/etc)", i+1, d, n)
		}
		if n := log.Uploads(d); n != 0 {
			t.Errorf("base layer %s uploaded %d times, want 0 (mounted)", d, n)
		}
	}
	got, err := remote.Index(ref(t, host+"/team/app:1"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := got.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.DockerManifestList {
		t.Errorf("index media type %s, want Docker's manifest list like the base", m.MediaType)
	}
	var plats []string
	for _, d := range m.Manifests {
		plats = append(plats, platform.FromOCI(*d.Platform).String())
	}
	if want := []string{"linux/amd64", "linux/arm64"}; !slices.Equal(plats, want) {
		t.Errorf("index platforms %v, want the base's order %v", plats, want)
	}
	var newLayer string
	for _, d := range m.Manifests {
		img, err := got.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		ds := digests(t, img)
		bimg, _ := baseIdx.Image(mustDigest(t, baseIdx, platform.FromOCI(*d.Platform).String()))
		if bds := digests(t, bimg); !slices.Equal(ds[:len(bds)], bds) {
			t.Errorf("%s: base layers %v, want %v", platform.FromOCI(*d.Platform).String(), ds[:len(bds)], bds)
		}
		newLayer = ds[len(ds)-1]
		ls, _ := img.Layers()
		files := layerFiles(t, ls[len(ls)-1])
		if f := files["etc/hello.txt"]; f.Data != "hello\n" || f.UID != 0 || f.Mode != 0o644 {
			t.Errorf("etc/hello.txt in new layer = %+v", f)
		}
		if mt, _ := ls[len(ls)-1].MediaType(); mt != types.DockerLayer {
			t.Errorf("new layer media type %s, want %s like the base", mt, types.DockerLayer)
		}
	}
	if n := log.Uploads(newLayer); n != 1 {
		t.Errorf("new layer uploaded %d times, want 1", n)
	}
}

// COPY --chown by name reads the stage's /etc/passwd and /etc/group from the
// top layer down, and fetches no layer below the one that holds them (and
// the destinations, which exist: a new one would be looked for in every
// layer, to give the directories the COPY makes the --chown owner).
func TestChownByNameReadsOnlyTopLayers(t *testing.T) {
	host, log := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64")
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile": fmt.Sprintf("FROM %s\nCOPY --chown=app:staff hello.txt /etc/\nCOPY --chown=daemon hello.txt /etc/\n", base),
		"hello.txt":  "hello\n",
	})
	baseImg, err := remote.Image(base)
	if err != nil {
		t.Fatal(err)
	}
	bds := digests(t, baseImg)
	log.Reset()
	res := mustBuildUnread(t, ctxDir, []string{"linux/amd64"}, nil)
	defer assembletest.Validate(t, res) // once the registry's counts are taken
	if n := log.BlobGets(bds[0]); n != 0 {
		t.Errorf("bottom base layer fetched %d times, want 0", n)
	}
	if n := log.BlobGets(bds[1]); n == 0 {
		t.Errorf("top base layer (with /etc/passwd) never fetched")
	}
	ls, err := res.Images[0].Image.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if f := layerFiles(t, ls[2])["etc/hello.txt"]; f.UID != 1000 || f.GID != 50 {
		t.Errorf("--chown=app:staff gave %d:%d, want 1000:50", f.UID, f.GID)
	}
	if f := layerFiles(t, ls[3])["etc/hello.txt"]; f.UID != 1 || f.GID != 1 {
		t.Errorf("--chown=daemon gave %d:%d, want 1:1", f.UID, f.GID)
	}
	if mt, _ := ls[2].MediaType(); mt != types.OCILayer {
		t.Errorf("new layer on an OCI base has type %s, want %s", mt, types.OCILayer)
	}
}

// A base that lacks a wanted platform fails at its FROM line, and the error
// lists the platforms the base has.
func TestBaseWithoutPlatformNamesWhatItHas(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf("# a comment\nFROM %s\nENV A=1\n", base)})
	_, err := build(t, ctxDir, []string{"linux/s390x"}, nil)
	want := fmt.Sprintf("Dockerfile:2: FROM %s [linux/s390x]: %s has no variant for linux/s390x (it has linux/amd64, linux/arm64)", base, base)
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
}

// An image built FROM scratch takes Docker media types when asked, OCI's by
// default.
func TestScratchMediaTypes(t *testing.T) {
	ctxDir := writeContext(t, map[string]string{"Dockerfile": "FROM scratch\nCOPY Dockerfile /\n"})
	for _, docker := range []bool{false, true} {
		res := mustBuild(t, ctxDir, []string{"linux/amd64"}, func(o *assemble.Options) { o.DockerMediaTypes = docker })
		mt, _ := res.Index.MediaType()
		ls, _ := res.Images[0].Image.Layers()
		lt, _ := ls[0].MediaType()
		want := [2]types.MediaType{types.OCIImageIndex, types.OCILayer}
		if docker {
			want = [2]types.MediaType{types.DockerManifestList, types.DockerLayer}
		}
		if got := [2]types.MediaType{mt, lt}; got != want {
			t.Errorf("docker=%v: index and layer types %v, want %v", docker, got, want)
		}
	}
}

// COPY --from=<image> reads that image's variant for each platform.
func TestCopyFromImagePicksEachPlatform(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf("FROM scratch\nCOPY --from=%s /bin/busybox /etc/passwd /from-image/\n", base)})
	res := mustBuild(t, ctxDir, []string{"linux/amd64", "linux/arm64"}, nil)
	machines := map[string]byte{"amd64": 0x3e, "arm64": 0xb7} // ELF e_machine
	for _, pi := range res.Images {
		ls, _ := pi.Image.Layers()
		files := layerFiles(t, ls[0])
		bb := files["from-image/busybox"]
		if len(bb.Data) < 20 || bb.Data[18] != machines[pi.Platform.Architecture] || bb.Mode != 0o755 {
			t.Errorf("%s: from-image/busybox is not this platform's busybox (mode %o)", pi.Platform.Architecture, bb.Mode)
		}
		if !strings.HasPrefix(files["from-image/passwd"].Data, "root:x:0:0") {
			t.Errorf("%s: from-image/passwd = %q", pi.Platform.Architecture, files["from-image/passwd"].Data)
		}
	}
}

// A destination without a trailing slash that is a directory in the base
// (or a symlink to one) receives the file, as in Docker.
func TestCopyIntoExistingDirectoryWithoutSlash(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64")
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile": fmt.Sprintf("FROM %s\nCOPY hello.txt /tmp\nCOPY hello.txt /srv/renamed.txt\n", base),
		"hello.txt":  "hello\n",
	})
	res := mustBuild(t, ctxDir, []string{"linux/amd64"}, nil)
	ls, _ := res.Images[0].Image.Layers()
	if _, ok := layerFiles(t, ls[2])["tmp/hello.txt"]; !ok {
		t.Errorf("COPY hello.txt /tmp gave %v, want tmp/hello.txt", layerFiles(t, ls[2]))
	}
	if _, ok := layerFiles(t, ls[3])["srv/renamed.txt"]; !ok {
		t.Errorf("COPY hello.txt /srv/renamed.txt gave %v", layerFiles(t, ls[3]))
	}
}

// ONBUILD triggers of a base image run first in the stage built on it, and
// are not passed on.
func TestOnbuildTriggersRunInTheChild(t *testing.T) {
	host, _ := registrytest.Memory(t)
	parentCtx := writeContext(t, map[string]string{"Dockerfile": "FROM scratch\nONBUILD COPY hello.txt /onbuild/\nONBUILD LABEL triggered=yes\n"})
	push(t, mustBuild(t, parentCtx, []string{"linux/amd64"}, nil), host+"/lib/parent:1")
	childCtx := writeContext(t, map[string]string{
		"Dockerfile": fmt.Sprintf("FROM %s/lib/parent:1\nENV A=1\n", host),
		"hello.txt":  "from the child's context\n",
	})
	res := mustBuild(t, childCtx, []string{"linux/amd64"}, nil)
	img := res.Images[0].Image
	ls, _ := img.Layers()
	if len(ls) != 1 || layerFiles(t, ls[0])["onbuild/hello.txt"].Data != "from the child's context\n" {
		t.Fatalf("child layers %d, want the trigger's COPY of the child's context", len(ls))
	}
	cf, _ := img.ConfigFile()
	if cf.Config.Labels["triggered"] != "yes" || len(cf.Config.OnBuild) != 0 {
		t.Errorf("labels %v onbuild %v; want the trigger's label and no triggers left", cf.Config.Labels, cf.Config.OnBuild)
	}
}

// Every image built on an OCI base names it in the OCI annotations (the
// reference, and the digest of the platform's manifest it builds on), as
// ko does; Docker manifests have no annotations.
func TestBaseAnnotations(t *testing.T) {
	host, _ := registrytest.Memory(t)
	for _, docker := range []bool{false, true} {
		base := assembletest.Busybox(t, fmt.Sprintf("%s/library/busybox:%v", host, docker), docker, "linux/amd64", "linux/arm64")
		ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf("FROM %s\nENV A=1\n", base)})
		res := mustBuild(t, ctxDir, []string{"linux/amd64", "linux/arm64"}, nil)
		baseIdx, err := remote.Index(base)
		if err != nil {
			t.Fatal(err)
		}
		for _, pi := range res.Images {
			m, err := pi.Image.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{
				"org.opencontainers.image.base.name":   base.Name(),
				"org.opencontainers.image.base.digest": mustDigest(t, baseIdx, platform.FromOCI(pi.Platform).String()).String(),
			}
			if docker {
				want = nil
			}
			if !maps.Equal(m.Annotations, want) {
				t.Errorf("docker=%v %s: annotations %v, want %v", docker, pi.Platform.Architecture, m.Annotations, want)
			}
		}
	}
}

// The index takes the base index's media type, whatever its images' types.
func TestIndexTypeFollowsTheBaseIndex(t *testing.T) {
	host, _ := registrytest.Memory(t)
	img, err := random.Image(64, 1) // Docker media types
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
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	base := ref(t, host+"/library/mixed:1")
	if err := remote.WriteIndex(base, idx); err != nil {
		t.Fatal(err)
	}
	ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf("FROM %s\nLABEL a=b\n", base)})
	res := mustBuildUnread(t, ctxDir, []string{"linux/amd64"}, nil)
	if mt, _ := res.Index.MediaType(); mt != types.OCIImageIndex {
		t.Errorf("index type %s, want the base index's %s", mt, types.OCIImageIndex)
	}
}

// Copying a directory's contents into a directory the image has leaves
// that directory alone (/tmp keeps 1777 and its owner), with and without
// --chown, as BuildKit does.
func TestCopyIntoExistingDirectoryKeepsIt(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64")
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile": fmt.Sprintf("FROM %s\nCOPY dir/ /tmp/\nCOPY --chown=1000 --chmod=0700 dir/ /tmp/\nCOPY --chown=1000 dir/ /new/\n", base),
		"dir/f.txt":  "f\n",
	})
	os.Chmod(filepath.Join(ctxDir, "dir"), 0o750)
	res := mustBuild(t, ctxDir, []string{"linux/amd64"}, nil)
	ls, _ := res.Images[0].Image.Layers()
	for i, l := range ls[2:4] {
		if f := layerFiles(t, l)["tmp/"]; f.Mode != 0o1777 || f.UID != 0 || f.GID != 0 {
			t.Errorf("layer %d gives /tmp %+v, want it as the image has it: 1777 and root's", i+3, f)
		}
	}
	if f, ok := layerFiles(t, ls[4])["new/"]; !ok || f.Mode != 0o755 || f.UID != 1000 || f.GID != 1000 {
		t.Errorf("COPY --chown=1000 dir/ /new/ made /new %+v (present %v), want 0755 1000:1000", f, ok)
	}
}

// The layer listings a COPY's destination lookup reads are kept beside the
// unpacked layers: a later build on the machine whose COPY misses the
// cache (a context file changed) fetches no base layer again.
func TestLayerListingsKeptAcrossBuilds(t *testing.T) {
	host, log := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64")
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile": fmt.Sprintf("FROM %s\nWORKDIR /app\nCOPY hello.txt .\n", base),
		"hello.txt":  "hello\n",
	})
	baseImg, err := remote.Image(base)
	if err != nil {
		t.Fatal(err)
	}
	rootfs := &layers.Cache{Dir: t.TempDir()}
	keep := func(o *assemble.Options) { o.Rootfs = rootfs }
	log.Reset()
	mustBuildUnread(t, ctxDir, []string{"linux/amd64"}, keep)
	for _, d := range digests(t, baseImg) {
		if n := log.BlobGets(d); n != 1 {
			t.Errorf("first build: base layer %s fetched %d times, want once (/app is in no layer)", d, n)
		}
	}
	os.WriteFile(filepath.Join(ctxDir, "hello.txt"), []byte("changed\n"), 0o644)
	log.Reset()
	res := mustBuildUnread(t, ctxDir, []string{"linux/amd64"}, keep)
	for _, d := range digests(t, baseImg) {
		if n := log.BlobGets(d); n != 0 {
			t.Errorf("second build: base layer %s fetched %d times, want 0", d, n)
		}
	}
	ls, _ := res.Images[0].Image.Layers()
	assertLayer(t, ls[len(ls)-1], map[string]fileInfo{"app/": {Type: tar.TypeDir, Mode: 0o755}, "app/hello.txt": {Type: tar.TypeReg, Mode: 0o644, Data: "changed\n"}})
}

// The manifests and configs a base index names are kept by digest: a later
// build asks the registry only for the tag's index, reads each platform's
// manifest and config from disk, and still mounts the base's layers when
// it pushes, giving the same image. A kept file whose bytes are not its
// digest's is read from the registry again.
func TestBaseManifestsAndConfigsKeptByDigest(t *testing.T) {
	host, log := registrytest.Distribution(t) // its blobs are per repository: mounts show
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile": fmt.Sprintf("FROM %s\nCOPY hello.txt /etc/\n", base),
		"hello.txt":  "hello\n",
	})
	meta := t.TempDir()
	withMeta := func(o *assemble.Options) { o.Registry.MetaDir = meta }
	reads := func() (manifests, configs int) {
		for _, r := range log.Requests() {
			switch {
			case r.Method == "GET" && strings.Contains(r.Path, "/library/busybox/manifests/sha256:"):
				manifests++
			case r.Method == "GET" && strings.Contains(r.Path, "/library/busybox/blobs/"):
				configs++ // the COPY into /etc reads the top layer too, once
			}
		}
		return
	}
	first := mustBuildUnread(t, ctxDir, []string{"linux/amd64", "linux/arm64"}, withMeta)
	push(t, first, host+"/team/meta:1")
	if m, _ := reads(); m != 2 {
		t.Fatalf("first build read %d platform manifests, want 2", m)
	}
	log.Reset()
	second := mustBuildUnread(t, ctxDir, []string{"linux/amd64", "linux/arm64"}, withMeta)
	push(t, second, host+"/team/meta2:1")
	m, blobs := reads()
	if m != 0 {
		t.Errorf("second build read %d platform manifests from the registry, want 0", m)
	}
	if blobs != 1 { // the top layer, for /etc, the same on both platforms; no config
		t.Errorf("second build read %d blobs, want 1 (the top layer, no config)", blobs)
	}
	d1, _ := first.Index.Digest()
	d2, _ := second.Index.Digest()
	if d1 != d2 {
		t.Errorf("index %s from the kept metadata, want %s as before", d2, d1)
	}
	baseImg, err := remote.Image(base)
	if err != nil {
		t.Fatal(err)
	}
	if bottom := digests(t, baseImg)[0]; log.Mounts(bottom) == 0 {
		t.Errorf("the base's bottom layer %s was not mounted into team/meta2", bottom)
	}
	assembletest.Validate(t, second)

	// Spoil every kept file: each is read from the registry again.
	filepath.WalkDir(meta, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.WriteFile(p, []byte("{}"), 0o644)
		}
		return nil
	})
	log.Reset()
	third := mustBuild(t, ctxDir, []string{"linux/amd64", "linux/arm64"}, withMeta)
	if m, _ := reads(); m != 2 {
		t.Errorf("with spoilt metadata the build read %d platform manifests, want 2", m)
	}
	if d3, _ := third.Index.Digest(); d3 != d1 {
		t.Errorf("index %s with spoilt metadata, want %s", d3, d1)
	}
}
