package assemble_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/assemble/testkit"
	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/layers"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// knownDifferences are the cases where manifold still gives another image
// than BuildKit, with the reason; the README lists them too.
var knownDifferences = map[string]string{}

// The differential suite: every case of testdata/differential/cases.txt
// built by manifold and by BuildKit v0.34.2 itself, for linux/amd64 and
// linux/arm64, must give the same files (type, mode, owner, size, content,
// link target, parent directories) and the same config.
func TestSameImageAsBuildKit(t *testing.T) {
	testkit.Require(t, os.Getenv("MANIFOLD_SKIP_BUILDKIT") == "" || testkit.InCI(), "MANIFOLD_SKIP_BUILDKIT is set")
	host, _ := registrytest.Memory(t)
	bk := testkit.BuildKit(t, host)
	testkit.HostQemu(t, "aarch64") // BuildKit runs arm64 steps through the host's binfmt_misc
	plats := []string{"linux/amd64", "linux/arm64"}
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, plats...)
	ctxDir := differentialContext(t)
	files := fileServer(t, ctxDir)
	repos := gitDaemon(t)
	for _, c := range differentialCases(t) {
		t.Run(c.name, func(t *testing.T) {
			df := strings.NewReplacer("@BASE@", base.String(), "@HTTP@", files, "@GIT@", repos).Replace(c.dockerfile)
			os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(df), 0o644)
			args := map[string]string{"BASE": base.String(), "GIVEN": "given"}
			want, err := bk.Build(t, ctxDir, plats, args)
			if err != nil {
				t.Fatalf("BuildKit: %v", err)
			}
			res := mustBuild(t, ctxDir, plats, func(o *assemble.Options) {
				withSandbox(o)
				o.BuildArgs = args
			})
			diff := compareWithBuildKit(t, res, want)
			if reason, known := knownDifferences[c.name]; known {
				if diff == "" {
					t.Errorf("known difference %q is gone: take it off the list", reason)
				}
				return
			}
			if diff != "" {
				t.Errorf("manifold and BuildKit differ (-BuildKit +manifold):\n%s\nDockerfile:\n%s", diff, c.dockerfile)
			}
		})
	}
}

// fileServer serves a copy of dir's files, dated 2 January 2020, on a
// loopback port for ADD URL cases: /files/NAME as they are, /cd/NAME with
// a Content-Disposition that names another file. It returns its URL.
func fileServer(t *testing.T, dir string) string {
	served := t.TempDir()
	if err := os.CopyFS(served, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	date := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	filepath.Walk(served, func(p string, _ os.FileInfo, _ error) error { return os.Chtimes(p, date, date) })
	mux := http.NewServeMux()
	mux.Handle("/files/", http.StripPrefix("/files/", http.FileServer(http.Dir(served))))
	mux.Handle("/cd/", http.StripPrefix("/cd/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Disposition", `attachment; filename="other.txt"`)
		http.FileServer(http.Dir(served)).ServeHTTP(w, r)
	})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// gitDaemon serves a repository, repo.git, on a loopback port with git
// daemon: two commits, the first tagged v1, with an executable file and a
// subdirectory. It returns the git:// URL of its base.
func gitDaemon(t *testing.T) string {
	_, err := exec.LookPath("git")
	testkit.Require(t, err == nil, "git (apt-get install git)")
	base := t.TempDir()
	work := filepath.Join(t.TempDir(), "work")
	git := func(dir string, args ...string) {
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	os.MkdirAll(filepath.Join(work, "sub"), 0o755)
	os.WriteFile(filepath.Join(work, "README"), []byte("first\n"), 0o644)
	os.WriteFile(filepath.Join(work, "run.sh"), []byte("#!/bin/sh\necho run\n"), 0o755)
	os.WriteFile(filepath.Join(work, "sub", "inner.txt"), []byte("inner v1\n"), 0o644)
	git(work, "init", "-q", "-b", "main")
	git(work, "add", ".")
	git(work, "commit", "-q", "-m", "one")
	git(work, "tag", "v1")
	os.WriteFile(filepath.Join(work, "sub", "inner.txt"), []byte("inner v2\n"), 0o644)
	os.WriteFile(filepath.Join(work, "NEW"), []byte("second\n"), 0o644)
	git(work, "add", ".")
	git(work, "commit", "-q", "-m", "two")
	git(base, "clone", "-q", "--bare", work, filepath.Join(base, "repo.git"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	daemon := exec.Command("git", "daemon", "--export-all", "--reuseaddr", "--listen=127.0.0.1", fmt.Sprintf("--port=%d", port), "--base-path="+base, base)
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { daemon.Process.Kill(); daemon.Wait() })
	for range 100 {
		if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
			c.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Sprintf("git://127.0.0.1:%d", port)
}

type differentialCase struct{ name, dockerfile string }

func differentialCases(t *testing.T) []differentialCase {
	data, err := os.ReadFile(filepath.Join(testkit.RepoRoot(), "testdata", "differential", "cases.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var out []differentialCase
	for _, part := range strings.Split(string(data), "\n=== ")[1:] {
		name, body, _ := strings.Cut(part, "\n")
		df := ""
		for strings.HasPrefix(body, "# escape=") || strings.HasPrefix(body, "# check=") {
			line, rest, _ := strings.Cut(body, "\n")
			df, body = df+line+"\n", rest // directives go first
		}
		df += "ARG BASE\n"
		if !strings.HasPrefix(body, "FROM ") && !strings.Contains(body, "\nFROM ") {
			df += "FROM $BASE\n" // the case is one stage on the base
		}
		out = append(out, differentialCase{name, df + body})
	}
	if len(out) < 60 {
		t.Fatalf("%d cases, want at least 60", len(out))
	}
	return out
}

// differentialContext copies testdata/differential/context and adds what
// git does not keep: modes, symlinks, hardlinks and archives.
func differentialContext(t *testing.T) string {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(testkit.RepoRoot(), "testdata", "differential", "context"))); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, "dir"), 0o750)
	os.Symlink("a.txt", filepath.Join(dir, "link.txt"))
	os.Symlink("/dir", filepath.Join(dir, "linkdir"))
	os.Symlink("../a.txt", filepath.Join(dir, "withlink", "inner"))
	os.Link(filepath.Join(dir, "h1"), filepath.Join(dir, "h2"))
	os.Link(filepath.Join(dir, "hdir", "h3"), filepath.Join(dir, "hdir", "h4"))
	var plain bytes.Buffer
	tw := tar.NewWriter(&plain)
	for _, f := range []struct{ name, data string }{{"x.txt", "x\n"}, {"sub/y.txt", "y\n"}, {"../up.txt", "up\n"}} {
		tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o640, Uid: 3, Gid: 4, Size: int64(len(f.data)), Typeflag: tar.TypeReg})
		tw.Write([]byte(f.data))
	}
	tw.Close()
	os.WriteFile(filepath.Join(dir, "arch.tar"), plain.Bytes(), 0o644)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(plain.Bytes())
	zw.Close()
	os.WriteFile(filepath.Join(dir, "arch.tar.gz"), gz.Bytes(), 0o644)
	return dir
}

// compareWithBuildKit unpacks each platform of both results and diffs the
// trees and configs.
func compareWithBuildKit(t *testing.T, res *assemble.Result, ociTar string) string {
	t.Helper()
	ref := t.TempDir()
	if out, err := exec.Command("tar", "-xf", ociTar, "-C", ref).CombinedOutput(); err != nil {
		t.Fatalf("untar: %v %s", err, out)
	}
	p, err := layout.FromPath(ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) == 1 && m.Manifests[0].MediaType.IsIndex() {
		if idx, err = idx.ImageIndex(m.Manifests[0].Digest); err != nil {
			t.Fatal(err)
		}
		m, _ = idx.IndexManifest()
	}
	var diffs []string
	for _, pi := range res.Images {
		plat := platform.FromOCI(pi.Platform)
		var want v1.Image
		for _, d := range m.Manifests {
			if d.Platform != nil && plat.Matches(*d.Platform) {
				want, _ = idx.Image(d.Digest)
			}
		}
		if want == nil {
			diffs = append(diffs, fmt.Sprintf("%s: BuildKit made no image", plat))
			continue
		}
		if d := cmp.Diff(imageView(t, want), imageView(t, pi.Image)); d != "" {
			diffs = append(diffs, fmt.Sprintf("%s:\n%s", plat, d))
		}
	}
	return strings.Join(diffs, "\n")
}

// imageView is what the suite compares of an image: its config's fields
// and every file of its unpacked tree.
func imageView(t *testing.T, img v1.Image) []string {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var hc struct { // what go-containerregistry's config type lacks
		Config struct {
			Healthcheck struct{ StartInterval time.Duration }
		} `json:"config"`
	}
	if err := json.Unmarshal(raw, &hc); err != nil {
		t.Fatal(err)
	}
	out := []string{
		fmt.Sprintf("Healthcheck.StartInterval %v", hc.Config.Healthcheck.StartInterval),
		fmt.Sprintf("platform %s/%s/%s", cf.OS, cf.Architecture, cf.Variant),
		fmt.Sprintf("Env %q", c.Env), fmt.Sprintf("Cmd %q", c.Cmd), fmt.Sprintf("Entrypoint %q", c.Entrypoint),
		fmt.Sprintf("WorkingDir %q", c.WorkingDir), fmt.Sprintf("User %q", c.User), fmt.Sprintf("Labels %v", c.Labels),
		fmt.Sprintf("ExposedPorts %v", c.ExposedPorts), fmt.Sprintf("Volumes %v", c.Volumes),
		fmt.Sprintf("StopSignal %q", c.StopSignal), fmt.Sprintf("Healthcheck %+v", c.Healthcheck),
		fmt.Sprintf("Shell %q", c.Shell), fmt.Sprintf("OnBuild %q", c.OnBuild), fmt.Sprintf("Author %q", cf.Author),
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, layerEntries(t, ls)...)
	dir := t.TempDir()
	if err := layers.Unpack(context.Background(), dir, ls); err != nil {
		t.Fatal(err)
	}
	var files []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %v %d:%d", rel, fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case fi.Mode().IsRegular():
			data, _ := os.ReadFile(p)
			line += fmt.Sprintf(" %d %x", len(data), sha256.Sum256(data))
			if st.Nlink > 1 {
				line += fmt.Sprintf(" links=%d", st.Nlink)
			}
		}
		files = append(files, line)
		return nil
	})
	sort.Strings(files)
	return append(out, files...)
}

// layerEntries lists every layer's entries in order: the directories a
// step's layer lists, with their owners and modes, are what other readers
// of the image see, whatever manifold's own unpacking would make of them.
func layerEntries(t *testing.T, ls []v1.Layer) []string {
	t.Helper()
	var out []string
	for i, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("layer %d: %v", i+1, err)
			}
			line := fmt.Sprintf("layer %d: %s %c %o %d:%d", i+1, strings.TrimSuffix(h.Name, "/"), h.Typeflag, h.Mode&0o7777, h.Uid, h.Gid)
			switch h.Typeflag {
			case tar.TypeReg:
				line += fmt.Sprintf(" %d", h.Size)
			case tar.TypeSymlink, tar.TypeLink:
				line += " -> " + h.Linkname
			}
			out = append(out, line)
		}
		rc.Close()
	}
	return out
}
