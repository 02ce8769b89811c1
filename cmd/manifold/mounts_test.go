package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/assemble/testkit"
	"github.com/manifold-build/manifold/registry/registrytest"
)

var twoPlatforms = "linux/amd64,linux/arm64"

// pushedLayers reads a pushed index: each platform's layers, by
// architecture.
func pushedLayers(t *testing.T, ref string) map[string][]v1.Layer {
	t.Helper()
	idx, err := remote.Index(mustRef(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := idx.IndexManifest()
	out := map[string][]v1.Layer{}
	for _, d := range m.Manifests {
		img, _ := idx.Image(d.Digest)
		if out[d.Platform.Architecture], err = img.Layers(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func tarFiles(t *testing.T, l v1.Layer) map[string]string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return tarContents(t, data)
}

// everyBlob is every byte a pushed index holds: the index, each manifest,
// config and layer (decompressed).
func everyBlob(t *testing.T, ref string) [][]byte {
	t.Helper()
	idx, err := remote.Index(mustRef(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := idx.RawManifest()
	out := [][]byte{raw}
	m, _ := idx.IndexManifest()
	for _, d := range m.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		rm, _ := img.RawManifest()
		rc, _ := img.RawConfigFile()
		out = append(out, rm, rc)
		ls, _ := img.Layers()
		for _, l := range ls {
			r, err := l.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(r)
			r.Close()
			out = append(out, data)
		}
	}
	return out
}

// grepTree finds files under dir holding needle, gzip ones decompressed.
func grepTree(t *testing.T, dir string, needle []byte) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
			if zr, err := gzip.NewReader(bytes.NewReader(data)); err == nil {
				if plain, err := io.ReadAll(zr); err == nil {
					data = plain
				}
			}
		}
		if bytes.Contains(data, needle) {
			found = append(found, p)
		}
		return nil
	})
	return found
}

// A secret reaches the step that mounts it, as a 0400 file on its target
// or as a variable, on both platforms; not another step; not one byte of
// it is in the pushed image (layers decompressed, configs, manifests,
// index), the local store or the cache directory; it is no part of the
// cache key; a required secret that was not given fails at its line.
func TestSecretsNeverLeave(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	secret := []byte("s3cr3t-manifold-7f1d4c")
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, secret, 0o600)
	t.Setenv("MANIFOLD_TEST_TOKEN", string(secret))
	ctx := contextDir(t, fmt.Sprintf(`FROM %s
RUN --mount=type=secret,id=tok,required sha256sum /run/secrets/tok | cut -c1-64 > /file-hash && stat -c %%a /run/secrets/tok > /file-mode
RUN --mount=type=secret,id=tok,env=TOKEN,required printf %%s "$TOKEN" | sha256sum | cut -c1-64 > /env-hash
RUN ! test -e /run/secrets/tok && test -z "$TOKEN" && echo none > /later
`, base))
	tag := host + "/app/secret:1"
	code, _, errOut := manifold(t, "build", "--platform", twoPlatforms, "--secret", "id=tok,src="+file, "-t", tag, "--push", ctx)
	if code != 0 {
		t.Fatalf("build: exit %d\n%s", code, errOut)
	}
	want := fmt.Sprintf("%x\n", sha256.Sum256(secret))
	for arch, ls := range pushedLayers(t, tag) {
		files := map[string]string{}
		for _, l := range ls[len(ls)-3:] {
			for k, v := range tarFiles(t, l) {
				files[k] = v
			}
		}
		if files["file-hash"] != want || files["env-hash"] != want || files["file-mode"] != "400\n" || files["later"] != "none\n" {
			t.Errorf("%s: the steps saw %q %q %q %q; want the secret's hash twice, mode 400, and nothing later",
				arch, files["file-hash"], files["env-hash"], files["file-mode"], files["later"])
		}
		for name := range files {
			if strings.Contains(name, "secrets") {
				t.Errorf("%s: the layer holds %s", arch, name)
			}
		}
	}
	for i, blob := range everyBlob(t, tag) {
		if bytes.Contains(blob, secret) {
			t.Errorf("blob %d of the pushed image holds the secret", i)
		}
	}
	// Into the local store too; then a changed secret is a cache hit.
	code, _, errOut = manifold(t, "build", "--platform", twoPlatforms, "--secret", "id=tok,env=MANIFOLD_TEST_TOKEN", "-t", "example.com/secret:1", ctx)
	if code != 0 {
		t.Fatalf("build into the store: exit %d\n%s", code, errOut)
	}
	for _, dir := range []string{filepath.Join(storeRoot(t), "store"), filepath.Join(storeRoot(t), "cache")} {
		if found := grepTree(t, dir, secret); len(found) > 0 {
			t.Errorf("the secret is in %v", found)
		}
	}
	os.WriteFile(file, []byte("another-secret"), 0o600)
	code, _, errOut = manifold(t, "build", "--platform", twoPlatforms, "--secret", "id=tok,src="+file, "-t", tag+"-again", "--push", ctx)
	if code != 0 {
		t.Fatalf("rebuild: exit %d\n%s", code, errOut)
	}
	if d1, d2 := must(remote.Head(mustRef(t, tag))).Digest, must(remote.Head(mustRef(t, tag+"-again"))).Digest; d1 != d2 {
		t.Errorf("a changed secret changed the image (%s, %s): it must not be in the cache key", d1, d2)
	}

	code, _, errOut = manifold(t, "build", "--platform", "linux/arm64", ctx)
	if code != 1 || !strings.Contains(errOut, "Dockerfile:2") || !strings.Contains(errOut, "secret tok is required") {
		t.Errorf("without the secret: exit %d, %q; want 1 at line 2 naming it", code, errOut)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A cache mount keeps what a step put there for the next build (the
// second build of changed source compiles nothing again), on both
// platforms, and is in no layer; sharing=locked makes two builds that use
// one take turns.
func TestCacheMountSurvivesBuilds(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	ctx := contextDir(t, fmt.Sprintf(`FROM %s
COPY hello.txt /src.txt
RUN --mount=type=cache,target=/root/.cache/build \
    if [ -e /root/.cache/build/object ]; then echo "reusing object"; else echo "compiling object"; echo obj > /root/.cache/build/object; fi; \
    cat /src.txt /root/.cache/build/object > /built
`, base))
	compiles := func(out string) int { return logged(out, "compiling object") }
	code, _, errOut := manifold(t, "build", "--platform", twoPlatforms, "-t", host+"/app/cached:1", "--push", ctx)
	if code != 0 || compiles(errOut) != 2 {
		t.Fatalf("first build: exit %d, %d compilations (want 2, one per platform)\n%s", code, compiles(errOut), errOut)
	}
	os.WriteFile(filepath.Join(ctx, "hello.txt"), []byte("changed\n"), 0o644)
	code, _, errOut = manifold(t, "build", "--platform", twoPlatforms, "-t", host+"/app/cached:2", "--push", ctx)
	if code != 0 || compiles(errOut) != 0 || logged(errOut, "reusing object") != 2 {
		t.Fatalf("second build of changed source: exit %d, %d compilations (want 0)\n%s", code, compiles(errOut), errOut)
	}
	for arch, ls := range pushedLayers(t, host+"/app/cached:2") {
		files := tarFiles(t, ls[len(ls)-1])
		if files["built"] != "changed\nobj\n" {
			t.Errorf("%s: /built = %q", arch, files["built"])
		}
		for name := range files {
			if strings.HasPrefix(name, "root/.cache") {
				t.Errorf("%s: the cache mount's %s is in the layer", arch, name)
			}
		}
	}

	// Two builds at once on one locked cache: one waits for the other.
	locked := contextDir(t, fmt.Sprintf(`FROM %s
ARG N
RUN --mount=type=cache,target=/c,id=shared-lock,sharing=locked \
    if [ -e /c/busy ]; then echo "overlapped"; exit 1; fi; touch /c/busy; sleep 1; rm /c/busy; echo $N > /n
`, base))
	var wg sync.WaitGroup
	codes := make([]int, 2)
	outs := make([]string, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var o, e bytes.Buffer
			codes[i] = run(t.Context(), []string{"build", "--platform", "linux/arm64", "--build-arg", fmt.Sprint("N=", i), locked}, &o, &e)
			outs[i] = e.String()
		}()
	}
	wg.Wait()
	for i := range 2 {
		if codes[i] != 0 {
			t.Errorf("locked build %d: exit %d\n%s", i, codes[i], outs[i])
		}
	}
}

// RUN --mount=type=ssh forwards the agent --ssh names: a static client
// inside the step (amd64 natively, arm64 under qemu) finds the key that
// ssh-add put in a real ssh-agent.
func TestSSHAgentForwarded(t *testing.T) {
	for _, tool := range []string{"ssh-agent", "ssh-keygen", "ssh-add"} {
		_, err := exec.LookPath(tool)
		testkit.Require(t, err == nil, "%s (apt-get install openssh-client)", tool)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	agent := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { agent.Process.Kill(); agent.Wait() }()
	key := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	var err error
	for range 50 { // the agent's socket appears shortly
		add := exec.Command("ssh-add", key)
		add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
		if err = add.Run(); err == nil {
			break
		}
		sleepBriefly()
	}
	if err != nil {
		t.Fatalf("ssh-add: %v", err)
	}
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	ctx := contextDir(t, fmt.Sprintf(`FROM %s
ARG TARGETARCH
COPY agentcheck-$TARGETARCH /bin/agentcheck
RUN --mount=type=ssh /bin/agentcheck > /keys && echo $SSH_AUTH_SOCK > /sock
RUN test -z "$SSH_AUTH_SOCK" && ! test -e /run/buildkit/ssh_agent.0 && echo gone > /after
`, base))
	for _, arch := range []string{"amd64", "arm64"} {
		build := exec.Command("go", "build", "-o", filepath.Join(ctx, "agentcheck-"+arch), "./testdata/fixtures/agentcheck")
		build.Dir = testkit.RepoRoot()
		build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build agentcheck for %s: %v\n%s", arch, err, out)
		}
	}
	tag := host + "/app/ssh:1"
	code, _, errOut := manifold(t, "build", "--platform", twoPlatforms, "--ssh", "default="+sock, "-t", tag, "--push", ctx)
	if code != 0 {
		t.Fatalf("build: exit %d\n%s", code, errOut)
	}
	for arch, ls := range pushedLayers(t, tag) {
		files := tarFiles(t, ls[len(ls)-2])
		after := tarFiles(t, ls[len(ls)-1])
		if files["keys"] != "1\n" || files["sock"] != "/run/buildkit/ssh_agent.0\n" || after["after"] != "gone\n" {
			t.Errorf("%s: the step saw %q keys at %q, the next %q", arch, files["keys"], files["sock"], after["after"])
		}
	}
}

func tarContents(t *testing.T, data []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = string(b)
	}
}

func sleepBriefly() { time.Sleep(100 * time.Millisecond) }
