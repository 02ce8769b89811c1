package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/assemble/testkit"
	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/registry/registrytest"
)

func platformsOf(t *testing.T, ref string) []string {
	t.Helper()
	idx, err := remote.Index(mustRef(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := idx.IndexManifest()
	var out []string
	for _, d := range m.Manifests {
		out = append(out, platform.FromOCI(*d.Platform).String())
	}
	slices.Sort(out)
	return out
}

// A CI matrix: each platform built on its own and pushed by digest with
// its metadata file, then one index made of the digests, which skopeo
// reads with both platforms, as a one-call build has them; index create
// of two tagged single-platform pushes does the same; two entries for one
// platform are refused.
func TestPushByDigestAndIndexCreate(t *testing.T) {
	host, _ := registrytest.Distribution(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	ctx := contextDir(t, fmt.Sprintf("FROM %s\nCOPY hello.txt /\nCMD [\"cat\", \"/hello.txt\"]\n", base))
	code, _, errOut := manifold(t, "build", "--platform", twoPlatforms, "-t", host+"/app/one-call:1", "--push", ctx)
	if code != 0 {
		t.Fatalf("one-call build: %d %s", code, errOut)
	}
	var digests []string
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		meta := filepath.Join(t.TempDir(), "metadata.json")
		code, out, errOut := manifold(t, "build", "--platform", p, "--output", "type=registry,name="+host+"/app/matrix,push-by-digest=true", "--metadata-file", meta, ctx)
		if code != 0 {
			t.Fatalf("build %s by digest: %d %s", p, code, errOut)
		}
		var md map[string]string
		data, _ := os.ReadFile(meta)
		if err := json.Unmarshal(data, &md); err != nil || md["containerimage.digest"] != strings.TrimSpace(out) {
			t.Fatalf("metadata %s, printed %q", data, out)
		}
		digests = append(digests, host+"/app/matrix@"+md["containerimage.digest"])
	}
	if tags, _ := remote.List(mustRef(t, host+"/app/matrix:x").Context()); len(tags) != 0 {
		t.Errorf("push-by-digest made tags %v", tags)
	}
	merged := host + "/app/matrix:1"
	code, _, errOut = manifold(t, append([]string{"index", "create", "-t", merged, "--push"}, digests...)...)
	if code != 0 {
		t.Fatalf("index create: %d %s", code, errOut)
	}
	if got, want := platformsOf(t, merged), platformsOf(t, host+"/app/one-call:1"); !slices.Equal(got, want) {
		t.Errorf("the merged index has %v, the one-call build %v", got, want)
	}
	_, err := exec.LookPath("skopeo")
	testkit.Require(t, err == nil, "skopeo (apt-get install skopeo)")
	out, err := exec.Command("skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+merged).Output()
	if err != nil {
		t.Fatalf("skopeo: %v", err)
	}
	for _, arch := range []string{`"amd64"`, `"arm64"`} {
		if !strings.Contains(string(out), arch) {
			t.Errorf("skopeo shows no %s in %s", arch, out)
		}
	}

	// Two tagged single-platform pushes.
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		tag := host + "/app/single:" + strings.ReplaceAll(p, "/", "-")
		if code, _, errOut := manifold(t, "build", "--platform", p, "-t", tag, "--push", ctx); code != 0 {
			t.Fatalf("build %s: %d %s", p, code, errOut)
		}
	}
	code, _, errOut = manifold(t, "index", "create", "-t", host+"/app/single:both", "--push", host+"/app/single:linux-amd64", host+"/app/single:linux-arm64")
	if code != 0 || !slices.Equal(platformsOf(t, host+"/app/single:both"), []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("index create of two tags: %d %s; platforms %v", code, errOut, platformsOf(t, host+"/app/single:both"))
	}
	code, _, errOut = manifold(t, "index", "create", "-t", host+"/app/single:dup", "--push", host+"/app/single:both", host+"/app/single:linux-arm64")
	if code != 1 || !strings.Contains(errOut, "allow-duplicates") {
		t.Errorf("two entries for one platform: exit %d, %q", code, errOut)
	}
	code, _, errOut = manifold(t, "index", "create", "-t", host+"/app/single:grow", "--push", host+"/app/single:linux-amd64")
	if code != 0 {
		t.Fatalf("index create of one: %d %s", code, errOut)
	}
	code, _, errOut = manifold(t, "index", "append", "-t", host+"/app/single:grow", host+"/app/single:linux-arm64")
	if code != 0 || !slices.Equal(platformsOf(t, host+"/app/single:grow"), []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("index append: %d %s; platforms %v", code, errOut, platformsOf(t, host+"/app/single:grow"))
	}
	code, out2, _ := manifold(t, "index", "create", "-t", host+"/app/single:dry", host+"/app/single:both")
	if code != 0 || !strings.Contains(out2, `"mediaType"`) {
		t.Errorf("index create without --push prints the index: %d %q", code, out2)
	}
}

// copy between two registries keeps the six-platform index's digest (and
// --platform picks one image); push puts a stored image in a registry;
// tag, digest and ls do what crane's do.
func TestCopyPushTagDigestLs(t *testing.T) {
	from, _ := registrytest.Distribution(t)
	to, _ := registrytest.Distribution(t)
	base := assembletest.Busybox(t, from+"/library/busybox:1", false)
	want := must(remote.Index(base))
	code, out, errOut := manifold(t, "copy", base.String(), to+"/mirror/busybox:1")
	if code != 0 {
		t.Fatalf("copy: %d %s", code, errOut)
	}
	got := must(remote.Index(mustRef(t, to+"/mirror/busybox:1")))
	if must(got.Digest()) != must(want.Digest()) || strings.TrimSpace(out) != must(want.Digest()).String() {
		t.Errorf("copied index %s (printed %q), want %s", must(got.Digest()), out, must(want.Digest()))
	}
	if n := len(must(got.IndexManifest()).Manifests); n != len(assembletest.AllPlatforms) {
		t.Errorf("copied %d platforms, want %d", n, len(assembletest.AllPlatforms))
	}
	code, _, errOut = manifold(t, "copy", "--platform", "linux/arm64", base.String(), to+"/mirror/busybox:arm64")
	img, err := remote.Image(mustRef(t, to+"/mirror/busybox:arm64"))
	if code != 0 || err != nil || must(img.ConfigFile()).Architecture != "arm64" {
		t.Errorf("copy --platform linux/arm64: %d %s %v", code, errOut, err)
	}

	ctx := contextDir(t, fmt.Sprintf("FROM %s\nCOPY hello.txt /\n", base))
	if code, _, errOut := manifold(t, "build", "--platform", twoPlatforms, "-t", "example.com/stored:1", ctx); code != 0 {
		t.Fatalf("build into the store: %d %s", code, errOut)
	}
	code, out, errOut = manifold(t, "push", "example.com/stored:1", to+"/app/stored:1")
	if code != 0 || !slices.Equal(platformsOf(t, to+"/app/stored:1"), []string{"linux/amd64", "linux/arm64"}) {
		t.Fatalf("push: %d %s", code, errOut)
	}
	pushed := strings.TrimSpace(out)
	if code, _, errOut := manifold(t, "tag", to+"/app/stored:1", "latest", "stable"); code != 0 {
		t.Errorf("tag: %d %s", code, errOut)
	}
	code, out, _ = manifold(t, "digest", to+"/app/stored:latest")
	if code != 0 || strings.TrimSpace(out) != pushed {
		t.Errorf("digest of the new tag: %q, want %s", out, pushed)
	}
	code, out, _ = manifold(t, "ls", to+"/app/stored")
	listed := strings.Fields(out)
	slices.Sort(listed)
	if code != 0 || !slices.Equal(listed, []string{"1", "latest", "stable"}) {
		t.Errorf("ls: %d %q", code, out)
	}
}

// tags derives docker/metadata-action's tags from a temporary git
// repository and from a CI's environment.
func TestTagsFromGit(t *testing.T) {
	_, err := exec.LookPath("git")
	testkit.Require(t, err == nil, "git")
	dir := t.TempDir()
	git := func(args ...string) {
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q", "-b", "feature/Login-Page")
	git("commit", "-q", "--allow-empty", "-m", "one")
	sha, _ := exec.Command("git", "-C", dir, "rev-parse", "--short=7", "HEAD").Output()
	short := strings.TrimSpace(string(sha))
	for _, k := range []string{"GITHUB_REF", "GITHUB_SHA", "CI_COMMIT_TAG", "CI_COMMIT_BRANCH", "CI_MERGE_REQUEST_IID", "CI_COMMIT_SHA"} {
		t.Setenv(k, "")
	}
	check := func(what string, want ...string) {
		t.Helper()
		code, out, errOut := manifold(t, "tags", "--image", "ghcr.io/me/app", "--git", dir)
		var full []string
		for _, w := range want {
			full = append(full, "ghcr.io/me/app:"+w)
		}
		if code != 0 || !slices.Equal(strings.Fields(out), full) {
			t.Errorf("%s: %d %q %s; want %v", what, code, out, errOut, full)
		}
	}
	check("a branch", "feature-Login-Page", "sha-"+short)
	git("tag", "v1.2.3")
	check("a release tag", "1.2.3", "1.2", "1", "latest", "sha-"+short)
	git("commit", "-q", "--allow-empty", "-m", "two")
	git("tag", "v2.0.0-rc.1")
	sha, _ = exec.Command("git", "-C", dir, "rev-parse", "--short=7", "HEAD").Output()
	short = strings.TrimSpace(string(sha))
	check("a pre-release", "2.0.0-rc.1", "sha-"+short)
	t.Setenv("GITHUB_REF", "refs/pull/42/merge")
	t.Setenv("GITHUB_SHA", "0123456789abcdef")
	check("a pull request on GitHub", "pr-42", "sha-0123456")
	t.Setenv("GITHUB_REF", "refs/tags/v3.1.0")
	check("a tag on GitHub", "3.1.0", "3.1", "3", "latest", "sha-0123456")

	// build -t @FILE takes them.
	list := filepath.Join(t.TempDir(), "tags")
	_, out, _ := manifold(t, "tags", "--image", "example.com/tagged", "--git", dir)
	os.WriteFile(list, []byte(out), 0o644)
	if code, _, errOut := manifold(t, "build", "-t", "@"+list, contextDir(t, "FROM scratch\nCOPY hello.txt /\n")); code != 0 || strings.Count(errOut, "stored example.com/tagged:") != 5 {
		t.Errorf("build -t @FILE: %d %s", code, errOut)
	}
}
