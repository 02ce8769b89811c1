package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// With SOURCE_DATE_EPOCH set, the seed example built twice from empty
// caches gives the same index digest, RUN steps included.
func TestSeedExampleIsReproducible(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	var digests []string
	for i := range 2 {
		code, out, errOut := manifold(t, "build", "--platform", "linux/amd64,linux/arm64", "--build-arg", "BASE="+base.String(),
			"--cache-dir", filepath.Join(t.TempDir(), "cache"), "-t", host+"/demo/seed:1", "--push", seedDir)
		if code != 0 {
			t.Fatalf("build %d: exit %d\n%s", i, code, errOut)
		}
		digests = append(digests, strings.TrimSpace(out))
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds from empty caches gave %s and %s", digests[0], digests[1])
	}
}

// The cache flags as buildx spells them: a build exports its steps to a
// local cache directory, and a build with an empty cache dir reads them
// back; a --cache-from that holds nothing yet is a warning; prune empties
// the local cache.
func TestCacheFlags(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	dir := contextDir(t, "FROM "+base.String()+"\nRUN echo built > /built\nCOPY hello.txt /\n")
	shared, first := filepath.Join(t.TempDir(), "shared-cache"), filepath.Join(t.TempDir(), "c1")
	code, _, errOut := manifold(t, "build", "--platform", "linux/amd64,linux/arm64", "--cache-dir", first,
		"--cache-from", "type=local,src="+shared, "--cache-to", "type=local,dest="+shared+",mode=max", "-t", "x/y:1", dir)
	if code != 0 || !strings.Contains(errOut, "WARNING: --cache-from "+shared) || !strings.Contains(errOut, "exported 4 cached steps") {
		t.Fatalf("first build: exit %d\n%s", code, errOut)
	}
	second := filepath.Join(t.TempDir(), "c2")
	code, _, errOut = manifold(t, "build", "--platform", "linux/amd64,linux/arm64", "--cache-dir", second,
		"--cache-from", "type=local,src="+shared, "-t", "x/y:2", dir)
	if code != 0 || countSteps(errOut, "RUN echo built", "CACHED") != 2 || countSteps(errOut, "COPY hello.txt", "CACHED") != 2 {
		t.Fatalf("second build: exit %d, want every step CACHED:\n%s", code, errOut)
	}
	code, _, errOut = manifold(t, "build", "--platform", "linux/amd64", "--cache-dir", first, "-t", "x/y:3", dir)
	if code != 0 || countSteps(errOut, "RUN echo built", "CACHED") != 1 {
		t.Fatalf("third build (the first one's local cache): exit %d\n%s", code, errOut)
	}
	if code, out, errOut := manifold(t, "prune", "--cache-dir", first); code != 0 || !strings.Contains(out, "freed ") {
		t.Fatalf("prune: exit %d, %q %s", code, out, errOut)
	}
	code, _, errOut = manifold(t, "build", "--platform", "linux/amd64", "--cache-dir", first, "-t", "x/y:4", dir)
	if code != 0 || strings.Contains(errOut, "CACHED") {
		t.Errorf("after prune: exit %d, want nothing cached:\n%s", code, errOut)
	}
	for _, bad := range []string{"type=s3", "type=registry", "type=gha,url=x", "type=local,dest=" + shared + ",mode=all"} {
		if code, _, errOut := manifold(t, "build", "--cache-to", bad, dir); code != 2 {
			t.Errorf("--cache-to %s: exit %d (%s), want 2", bad, code, errOut)
		}
	}
}

// --cache-to type=inline keeps the steps in the pushed image's config, and
// --cache-from that image on an empty cache dir finds every step.
func TestInlineCacheFlags(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	dir := contextDir(t, "FROM "+base.String()+"\nRUN echo built > /built\nCOPY hello.txt /\n")
	image := host + "/team/inline:1"
	code, _, errOut := manifold(t, "build", "--platform", "linux/amd64,linux/arm64", "--cache-dir", t.TempDir(),
		"--cache-to", "type=inline", "-t", image, "--push", dir)
	if code != 0 {
		t.Fatalf("first build: exit %d\n%s", code, errOut)
	}
	code, _, errOut = manifold(t, "build", "--platform", "linux/amd64,linux/arm64", "--cache-dir", t.TempDir(),
		"--cache-from", image, "-t", host+"/team/inline:2", "--push", dir)
	if code != 0 || countSteps(errOut, "RUN echo built", "CACHED") != 2 || countSteps(errOut, "COPY hello.txt", "CACHED") != 2 {
		t.Fatalf("build from the inline cache: exit %d, want every step CACHED:\n%s", code, errOut)
	}
}
