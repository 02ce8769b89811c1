package assemble_test

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/manifold-build/manifold/assemble"
)

// ADD --checksum: a match builds, a mismatch fails at its line naming
// both digests.
func TestAddChecksum(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "payload\n") }))
	defer srv.Close()
	have := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte("payload\n")))
	wrong := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte("other")))
	good := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf("FROM scratch\nADD --checksum=%s %s/p.txt /p/\n", have, srv.URL)})
	res := mustBuild(t, good, []string{"linux/amd64"}, nil)
	ls, _ := res.Images[0].Image.Layers()
	if f := layerFiles(t, ls[0])["p/p.txt"]; f.Data != "payload\n" || f.Mode != 0o600 {
		t.Errorf("p/p.txt = %+v, want the payload, 0600", f)
	}
	bad := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf("FROM scratch\nADD --checksum=%s %s/p.txt /p/\n", wrong, srv.URL)})
	_, err := build(t, bad, []string{"linux/amd64"}, nil)
	if err == nil || !strings.Contains(err.Error(), "Dockerfile:2") || !strings.Contains(err.Error(), have) || !strings.Contains(err.Error(), wrong) {
		t.Errorf("build: %v; want a mismatch at line 2 naming %s and %s", err, have, wrong)
	}
}

// Cache mounts are pruned least recently used first, down to what may be
// kept.
func TestPruneCacheMounts(t *testing.T) {
	dir := t.TempDir()
	for i, name := range []string{"old", "new"} {
		os.MkdirAll(filepath.Join(dir, name), 0o755)
		os.WriteFile(filepath.Join(dir, name, "data"), make([]byte, 1000), 0o644)
		when := time.Now().Add(time.Duration(i-2) * time.Hour)
		os.Chtimes(filepath.Join(dir, name), when, when)
	}
	freed, err := assemble.PruneCacheMounts(dir, 1500)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "old")); err == nil || freed < 1000 {
		t.Errorf("freed %d, old still there: %v", freed, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "new", "data")); err != nil {
		t.Errorf("the newest cache mount went too: %v", err)
	}
	if _, err := assemble.PruneCacheMounts(dir, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); err == nil {
		t.Error("prune to 0 kept a cache mount")
	}
}

// ADD --keep-git-dir keeps the repository's .git; without it there is
// none; --checksum names the commit.
func TestAddGitKeepsGitDirWhenAsked(t *testing.T) {
	repos := gitDaemon(t)
	ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf("FROM scratch\nADD --keep-git-dir=true %[1]s/repo.git /k/\nADD %[1]s/repo.git#v1 /plain/\n", repos)})
	res := mustBuild(t, ctxDir, []string{"linux/amd64"}, nil)
	ls, _ := res.Images[0].Image.Layers()
	kept, plain := layerFiles(t, ls[0]), layerFiles(t, ls[1])
	if _, ok := kept["k/.git/HEAD"]; !ok || kept["k/NEW"].Data != "second\n" {
		t.Errorf("--keep-git-dir: no k/.git/HEAD or the wrong commit")
	}
	for name := range plain {
		if strings.Contains(name, ".git") {
			t.Errorf("without --keep-git-dir the layer holds %s", name)
		}
	}
	if plain["plain/sub/inner.txt"].Data != "inner v1\n" || plain["plain/run.sh"].Mode&0o111 == 0 {
		t.Errorf("#v1: %+v %+v", plain["plain/sub/inner.txt"], plain["plain/run.sh"])
	}
	bad := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf("FROM scratch\nADD --checksum=0000000 %s/repo.git#v1 /x/\n", repos)})
	if _, err := build(t, bad, []string{"linux/amd64"}, nil); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("a wrong commit checksum: %v", err)
	}
}
