package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/manifold-build/manifold/emulate"
	"github.com/manifold-build/manifold/registry/registrytest"
)

func TestMain(m *testing.M) {
	emulate.Main() // RUN steps re-execute the test binary as the sandbox's init
	os.Exit(m.Run())
}

// manifold runs the command in-process with its own store and cache.
func manifold(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Setenv("MANIFOLD_STORE", filepath.Join(storeRoot(t), "store"))
	t.Setenv("XDG_CACHE_HOME", filepath.Join(storeRoot(t), "cache"))
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

var roots = map[string]string{}

func storeRoot(t *testing.T) string {
	if roots[t.Name()] == "" {
		roots[t.Name()] = t.TempDir()
	}
	return roots[t.Name()]
}

func contextDir(t *testing.T, dockerfile string) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644)
	os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello\n"), 0o644)
	return dir
}

func TestUsageErrorsExitTwo(t *testing.T) {
	ctx := contextDir(t, "FROM scratch\n")
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"build"},
		{"build", "--no-such-flag", ctx},
		{"build", "--platform", "linux/", ctx},
		{"build", "--push", ctx},
		{"build", "-o", "type=tarball", ctx},
		{"build", "--build-arg", "=x", ctx},
		{"inspect"},
	} {
		if code, _, stderr := manifold(t, args...); code != 2 || stderr == "" {
			t.Errorf("manifold %v: exit %d, stderr %q; want 2 and a message", args, code, stderr)
		}
	}
}

func TestBuildErrorExitsOneWithItsLine(t *testing.T) {
	ctx := contextDir(t, "FROM scratch\nCOPY hello.txt /\nCOPY nope.txt /\n")
	code, _, stderr := manifold(t, "build", "-t", "127.0.0.1:1/x:1", "--platform", "linux/amd64", ctx)
	want := `Dockerfile:3: COPY nope.txt / [linux/amd64]: "nope.txt": not found in the build context`
	if code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, stderr, want)
	}
	if code, _, _ := manifold(t, "inspect", "127.0.0.1:1/x:1"); code == 0 {
		t.Errorf("a failed build left the tag in the local store")
	}
}

func TestBuildIntoStoreThenInspect(t *testing.T) {
	ctx := contextDir(t, "FROM scratch\nCOPY hello.txt /\nENV A=1\nCMD [\"/hello.txt\"]\n")
	code, stdout, stderr := manifold(t, "build", "--progress", "quiet", "--platform", "linux/amd64,linux/arm64", "-t", "127.0.0.1:1/hello:1", ctx)
	if code != 0 {
		t.Fatalf("build: exit %d: %s", code, stderr)
	}
	digest := strings.TrimSpace(stdout)
	code, stdout, stderr = manifold(t, "inspect", "127.0.0.1:1/hello:1")
	if code != 0 {
		t.Fatalf("inspect: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"Digest:    " + digest, "linux/amd64:", "linux/arm64:", `Cmd:`, `["/hello.txt"]`, "A=1"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, _ = manifold(t, "inspect", "--raw", "127.0.0.1:1/hello:1")
	var m struct{ Manifests []json.RawMessage }
	if code != 0 || json.Unmarshal([]byte(stdout), &m) != nil || len(m.Manifests) != 2 {
		t.Errorf("inspect --raw: exit %d, output %q; want the index JSON with 2 manifests", code, stdout)
	}
}

func TestOutputs(t *testing.T) {
	ctx := contextDir(t, "FROM scratch\nCOPY hello.txt /\n")
	dir := t.TempDir()
	lay, tarball := filepath.Join(dir, "layout"), filepath.Join(dir, "out.tar")
	code, stdout, stderr := manifold(t, "build", "--platform", "linux/amd64,linux/arm/v7", "-t", "127.0.0.1:1/out:1",
		"-o", "type=oci-layout,dest="+lay, "-o", "type=oci,dest="+tarball, ctx)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	p, err := layout.FromPath(lay)
	if err != nil {
		t.Fatal(err)
	}
	ii, _ := p.ImageIndex()
	im, _ := ii.IndexManifest()
	if len(im.Manifests) != 1 || im.Manifests[0].Digest.String() != strings.TrimSpace(stdout) ||
		im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "127.0.0.1:1/out:1" {
		t.Errorf("layout index.json = %+v, want the built index %s named 127.0.0.1:1/out:1", im.Manifests, stdout)
	}
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names[h.Name] = true
	}
	for _, want := range []string{"oci-layout", "index.json", "blobs/sha256/" + strings.TrimPrefix(strings.TrimSpace(stdout), "sha256:")} {
		if !names[want] {
			t.Errorf("OCI tarball lacks %s (has %v)", want, names)
		}
	}
}

func TestPushWritesMetadata(t *testing.T) {
	host, _ := registrytest.Memory(t)
	ctx := contextDir(t, "FROM scratch\nCOPY hello.txt /\n")
	meta := filepath.Join(t.TempDir(), "meta.json")
	code, stdout, stderr := manifold(t, "build", "--push", "-t", host+"/app:1", "-t", host+"/app:latest", "--metadata-file", meta, ctx)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var md map[string]string
	data, _ := os.ReadFile(meta)
	if err := json.Unmarshal(data, &md); err != nil || md["containerimage.digest"] != strings.TrimSpace(stdout) {
		t.Errorf("metadata %s, want the digest %s", data, stdout)
	}
	for _, tag := range []string{"app:1", "app:latest"} {
		r, _ := name.ParseReference(host + "/" + tag)
		d, err := remote.Head(r)
		if err != nil || d.Digest.String() != strings.TrimSpace(stdout) {
			t.Errorf("%s: %v %v", tag, d, err)
		}
	}
}

var (
	plainStart = regexp.MustCompile(`(?m)^#(\d+) ([^0-9].*)$`)
	plainEnd   = regexp.MustCompile(`(?m)^#(\d+) (CACHED|DONE [0-9.]+s|ERROR: .*)$`)
	plainLog   = regexp.MustCompile(`(?m)^#(\d+) [0-9]+\.[0-9]{3} (.*)$`)
)

// plainSteps reads BuildKit's plain progress: each step's name, its
// output lines and how it ended ("CACHED", "DONE", "ERROR").
type seenStep struct {
	name, end string
	logs      []string
}

func plainSteps(out string) []*seenStep {
	byID := map[string]*seenStep{}
	var steps []*seenStep
	for _, m := range plainStart.FindAllStringSubmatch(out, -1) {
		if plainEnd.MatchString(m[0]) || byID[m[1]] != nil {
			continue // an end line, or the second line of a step
		}
		s := &seenStep{name: m[2]}
		byID[m[1]] = s
		steps = append(steps, s)
	}
	for _, m := range plainLog.FindAllStringSubmatch(out, -1) {
		if s := byID[m[1]]; s != nil {
			s.logs = append(s.logs, m[2])
		}
	}
	for _, m := range plainEnd.FindAllStringSubmatch(out, -1) {
		if s := byID[m[1]]; s != nil {
			s.end, _, _ = strings.Cut(m[2], " ")
		}
	}
	return steps
}

// countSteps counts the steps whose name holds part and that ended so.
func countSteps(out, part, end string) int {
	n := 0
	for _, s := range plainSteps(out) {
		if strings.Contains(s.name, part) && s.end == end {
			n++
		}
	}
	return n
}

// logged counts output lines equal to line.
func logged(out, line string) int {
	n := 0
	for _, s := range plainSteps(out) {
		for _, l := range s.logs {
			if l == line {
				n++
			}
		}
	}
	return n
}

// Every command's --help exits 0 with an example; a buildx flag manifold
// lacks is named as such, with what to do instead.
func TestHelpAndBuildxFlags(t *testing.T) {
	for _, c := range commands() {
		args := []string{c.name, "--help"}
		if c.name == "index" {
			args = []string{"index", "create", "--help"}
		}
		code, _, errOut := manifold(t, args...)
		if code != 0 || !strings.Contains(errOut, "Example:\n") || !strings.Contains(errOut, "manifold "+c.name+" ") {
			t.Errorf("manifold %s: exit %d, %q; want 0 and an example", strings.Join(args, " "), code, errOut)
		}
	}
	for _, flag := range []string{"--load", "--builder=x", "--sbom=true", "-q"} {
		code, _, errOut := manifold(t, "build", flag, ".")
		if code != 2 || !strings.Contains(errOut, "is a docker buildx flag manifold does not have: ") {
			t.Errorf("build %s: exit %d, %q", flag, code, errOut)
		}
	}
}

// version says what a bug report needs: the version, the Go version,
// whether this kernel has private binfmt_misc instances, and how each
// platform runs.
func TestVersion(t *testing.T) {
	code, out, _ := manifold(t, "version")
	for _, want := range []string{"manifold ", "\ncommit:", "\ngo:       go1.", "\nprivate binfmt_misc: ", "\n  linux/amd64      native", "\n  linux/arm64      "} {
		if !strings.Contains(out, want) {
			t.Errorf("version (exit %d) lacks %q:\n%s", code, want, out)
		}
	}
}
