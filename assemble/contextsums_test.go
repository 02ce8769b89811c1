package assemble

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A build reads again only the context files whose stat changed since an
// earlier build hashed them, and every time a file changed in the seconds
// before the build.
func TestContextSumsReadOnlyChangedFiles(t *testing.T) {
	defer SetSettled(0)()
	dir, ctx := t.TempDir(), t.TempDir()
	for _, n := range []string{"a", "b"} {
		os.WriteFile(filepath.Join(ctx, n), []byte(n), 0o644)
	}
	reads := map[string]int{}
	build := func() {
		c := openContextSums(dir, ctx, filepath.Join(ctx, "Dockerfile"))
		for _, n := range []string{"a", "b"} {
			fi, err := os.Lstat(filepath.Join(ctx, n))
			if err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(filepath.Join(ctx, n))
			got, err := c.sum(n, fi, func() ([sha256.Size]byte, error) {
				reads[n]++
				return sha256.Sum256(data), nil
			})
			if err != nil || got != sha256.Sum256(data) {
				t.Errorf("%s: sum %x, %v; want that of %q", n, got, err, data)
			}
		}
		c.save()
	}
	build()
	build()
	if reads["a"] != 1 || reads["b"] != 1 {
		t.Errorf("unchanged files read %v times, want once each", reads)
	}
	os.WriteFile(filepath.Join(ctx, "b"), []byte("B"), 0o644) // same size
	build()
	if reads["a"] != 1 || reads["b"] != 2 {
		t.Errorf("after b changed: read %v times, want a once and b twice", reads)
	}
	settled = time.Hour
	os.WriteFile(filepath.Join(ctx, "b"), []byte("b"), 0o644)
	build()
	build()
	if reads["a"] != 1 || reads["b"] != 4 {
		t.Errorf("b changed within the settling time: read %v times, want a once and b every build", reads)
	}
}
