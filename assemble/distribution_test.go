package assemble_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/assemble/testkit"
	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// The no-RUN path against the real distribution registry, read back by real
// clients: skopeo copies the whole index, umoci unpacks every platform.
func TestDistributionRoundTripWithSkopeoAndUmoci(t *testing.T) {
	for _, tc := range []struct {
		name      string
		docker    bool
		platforms []string
	}{
		{"two-platforms-docker", true, []string{"linux/amd64", "linux/arm64"}},
		{"six-platforms-oci", false, assembletest.AllPlatforms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, log := registrytest.Distribution(t)
			base := assembletest.Busybox(t, host+"/base/busybox:1", tc.docker, tc.platforms...)
			ctxDir := writeContext(t, map[string]string{
				"Dockerfile": fmt.Sprintf(`FROM %s
COPY --chown=app:staff --chmod=0640 secret.txt /etc/
COPY tree/ /opt/tree/
ADD archive.tar.gz /opt/unpacked/
WORKDIR /opt
CMD ["ls", "/opt"]
`, base),
				"secret.txt":     "s3cret\n",
				"tree/a.txt":     "a\n",
				"tree/sub/b.txt": "b\n",
			})
			writeArchive(t, filepath.Join(ctxDir, "archive.tar.gz"), map[string]string{"inside/x.txt": "x\n"})
			log.Reset()
			res := mustBuildUnread(t, ctxDir, tc.platforms, nil)
			defer assembletest.Validate(t, res) // once the registry's counts are taken
			push(t, res, host+"/apps/demo:1")

			baseIdx, err := remote.Index(base)
			if err != nil {
				t.Fatal(err)
			}
			idx, err := remote.Index(ref(t, host+"/apps/demo:1"))
			if err != nil {
				t.Fatal(err)
			}
			m, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			wantIdx := types.OCIImageIndex
			if tc.docker {
				wantIdx = types.DockerManifestList
			}
			if m.MediaType != wantIdx {
				t.Errorf("index type %s, want %s", m.MediaType, wantIdx)
			}
			checkPlatforms(t, m, tc.platforms)
			for _, d := range m.Manifests {
				img, err := idx.Image(d.Digest)
				if err != nil {
					t.Fatal(err)
				}
				bimg, err := baseIdx.Image(mustDigest(t, baseIdx, platform.FromOCI(*d.Platform).String()))
				if err != nil {
					t.Fatal(err)
				}
				bds, ds := digests(t, bimg), digests(t, img)
				if !slices.Equal(ds[:len(bds)], bds) || len(ds) != len(bds)+4 {
					t.Errorf("%s: layers %v, want the base's %v and 4 new (3 COPY/ADD, WORKDIR)", platform.FromOCI(*d.Platform).String(), ds, bds)
				}
				if log.Mounts(bds[0]) == 0 {
					t.Errorf("base layer %s was not mounted from the base's repository", bds[0])
				}
				// Base layers are read at most once: the top one for
				// /etc/passwd and /etc/group (--chown=app:staff), each for
				// /opt, which none has.
				for _, b := range bds {
					if n := log.BlobGets(b); n > 1 {
						t.Errorf("base layer %s fetched %d times", b, n)
					}
				}
				for _, n := range ds[len(bds):] {
					if u := log.Uploads(n); u > 1 {
						t.Errorf("new layer %s uploaded %d times, want at most 1", n, u)
					}
				}
			}
			oci := filepath.Join(t.TempDir(), "oci")
			skopeo(t, "copy", "--all", "--src-tls-verify=false", "docker://"+host+"/apps/demo:1", "oci:"+oci+":demo")
			copied := copiedIndex(t, oci, "demo")
			checkPlatforms(t, copied, tc.platforms)
			for i, d := range copied.Manifests {
				root := umociUnpack(t, oci, d, fmt.Sprintf("p%d", i))
				checkFile(t, root, "etc/secret.txt", 0o640, 1000, 50, "s3cret\n")
				checkFile(t, root, "opt/tree/sub/b.txt", 0o644, 0, 0, "b\n")
				checkFile(t, root, "opt/unpacked/inside/x.txt", 0o644, 0, 0, "x\n")
				if _, err := os.Lstat(filepath.Join(root, "bin/busybox")); err != nil {
					t.Errorf("%s: base file bin/busybox missing: %v", platform.FromOCI(*d.Platform).String(), err)
				}
			}
		})
	}
}

func checkPlatforms(t *testing.T, m *v1.IndexManifest, want []string) {
	t.Helper()
	fields := map[string][3]string{
		"linux/amd64": {"linux", "amd64", ""}, "linux/arm64": {"linux", "arm64", ""}, // as BuildKit writes it
		"linux/arm/v7": {"linux", "arm", "v7"}, "linux/ppc64le": {"linux", "ppc64le", ""},
		"linux/s390x": {"linux", "s390x", ""}, "linux/386": {"linux", "386", ""},
	}
	if len(m.Manifests) != len(want) {
		t.Fatalf("index has %d manifests, want %d", len(m.Manifests), len(want))
	}
	for i, d := range m.Manifests {
		p := d.Platform
		if got := [3]string{p.OS, p.Architecture, p.Variant}; got != fields[want[i]] {
			t.Errorf("entry %d platform %v, want %v", i, got, fields[want[i]])
		}
	}
}

func skopeo(t *testing.T, args ...string) {
	t.Helper()
	_, err := exec.LookPath("skopeo")
	testkit.Require(t, err == nil, "skopeo not installed (apt-get install skopeo)")
	if out, err := exec.Command("skopeo", args...).CombinedOutput(); err != nil {
		t.Fatalf("skopeo %v: %v\n%s", args, err, out)
	}
}

// copiedIndex reads the image index that skopeo copied into an OCI layout
// under tag (skopeo converts Docker types to OCI's, so digests change).
func copiedIndex(t *testing.T, oci, tag string) *v1.IndexManifest {
	t.Helper()
	top := readIndex(t, filepath.Join(oci, "index.json"))
	for _, d := range top.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] == tag {
			return readIndex(t, filepath.Join(oci, "blobs", d.Digest.Algorithm, d.Digest.Hex))
		}
	}
	t.Fatalf("skopeo wrote no %s into %s", tag, oci)
	return nil
}

func readIndex(t *testing.T, file string) *v1.IndexManifest {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := v1.ParseIndexManifest(f)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// umociUnpack names one manifest of an OCI layout in its index.json and has
// umoci unpack it; it returns the unpacked root filesystem.
func umociUnpack(t *testing.T, oci string, d v1.Descriptor, tag string) string {
	t.Helper()
	_, err := exec.LookPath("umoci")
	testkit.Require(t, err == nil, "umoci not installed (apt-get install umoci)")
	idxFile := filepath.Join(oci, "index.json")
	var idx v1.IndexManifest
	data, err := os.ReadFile(idxFile)
	if err == nil {
		err = json.Unmarshal(data, &idx)
	}
	if err != nil {
		t.Fatal(err)
	}
	d.Annotations = map[string]string{"org.opencontainers.image.ref.name": tag}
	d.Platform = nil
	idx.Manifests = append(idx.Manifests, d)
	if data, err = json.Marshal(idx); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(idxFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "bundle")
	args := []string{"unpack", "--image", oci + ":" + tag, bundle}
	if os.Geteuid() != 0 {
		args = append([]string{"unpack", "--rootless"}, args[1:]...)
	}
	if out, err := exec.Command("umoci", args...).CombinedOutput(); err != nil {
		t.Fatalf("umoci %v: %v\n%s", args, err, out)
	}
	return filepath.Join(bundle, "rootfs")
}

func checkFile(t *testing.T, root, name string, mode os.FileMode, uid, gid int, data string) {
	t.Helper()
	p := filepath.Join(root, name)
	fi, err := os.Lstat(p)
	if err != nil {
		t.Errorf("%s: %v", name, err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != mode || (os.Geteuid() == 0 && (int(st.Uid) != uid || int(st.Gid) != gid)) {
		t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", name, fi.Mode().Perm(), st.Uid, st.Gid, mode, uid, gid)
	}
	if got, _ := os.ReadFile(p); string(got) != data {
		t.Errorf("%s holds %q, want %q", name, got, data)
	}
}

func writeArchive(t *testing.T, file string, files map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, n := range slices.Sorted(mapsKeys(files)) {
		tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg})
		tw.Write([]byte(files[n]))
	}
	tw.Close()
	zw.Close()
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A RUN that deletes a base file and replaces a base directory gives a layer
// that real clients (skopeo copy, umoci unpack) apply to the expected tree.
func TestRunWhiteoutsApplyInRealClients(t *testing.T) {
	host, _ := registrytest.Distribution(t)
	plats := []string{"linux/amd64", "linux/arm64"}
	base := assembletest.Busybox(t, host+"/base/busybox:1", true, plats...)
	ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf(`FROM %s
RUN rm /etc/group && rm -rf /usr/sbin && mkdir /usr/sbin && uname -m > /usr/sbin/only
`, base)})
	res := mustBuild(t, ctxDir, plats, withSandbox)
	push(t, res, host+"/apps/wh:1")
	oci := filepath.Join(t.TempDir(), "oci")
	skopeo(t, "copy", "--all", "--src-tls-verify=false", "docker://"+host+"/apps/wh:1", "oci:"+oci+":wh")
	for i, d := range copiedIndex(t, oci, "wh").Manifests {
		root := umociUnpack(t, oci, d, fmt.Sprintf("p%d", i))
		p := platform.FromOCI(*d.Platform).String()
		if _, err := os.Lstat(filepath.Join(root, "etc/group")); !os.IsNotExist(err) {
			t.Errorf("%s: /etc/group survived its deletion (%v)", p, err)
		}
		checkFile(t, root, "etc/passwd", 0o644, 0, 0, "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n")
		names, err := os.ReadDir(filepath.Join(root, "usr/sbin"))
		if err != nil || len(names) != 1 || names[0].Name() != "only" {
			t.Errorf("%s: /usr/sbin holds %v (%v), want just the new file", p, names, err)
		}
		checkFile(t, root, "usr/sbin/only", 0o644, 0, 0, assembletest.Machine(p)+"\n")
		if _, err := os.Lstat(filepath.Join(root, "bin/busybox")); err != nil {
			t.Errorf("%s: bin/busybox: %v", p, err)
		}
	}
}
