package registry_test

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/manifold-build/manifold/registry"
)

func randomLayer(t *testing.T, size int64) v1.Layer {
	t.Helper()
	l, err := random.Layer(size, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Past its bound the cache drops the least recently used layers first, and
// never holds more than the bound plus the entry it just stored.
func TestLocalCacheBound(t *testing.T) {
	c := &registry.LocalCache{Dir: t.TempDir()}
	var sizes []int64
	for i := range 6 {
		l := randomLayer(t, 4000)
		if err := c.Put(fmt.Sprintf("sha256:%064d", i), registry.Step{CreatedBy: fmt.Sprint(i)}, l); err != nil {
			t.Fatal(err)
		}
		n, _ := l.Size()
		sizes = append(sizes, n)
		time.Sleep(10 * time.Millisecond) // distinct use times
	}
	if _, _, ok := c.Get(fmt.Sprintf("sha256:%064d", 0)); !ok { // 0 is now the most recently used
		t.Fatal("entry 0 missing before any bound")
	}
	c.Max = sizes[1] + sizes[2] + sizes[3]/2
	if err := c.Put(fmt.Sprintf("sha256:%064d", 6), registry.Step{}, randomLayer(t, 4000)); err != nil {
		t.Fatal(err)
	}
	have := map[int]bool{}
	for i := range 7 {
		_, _, ok := c.Get(fmt.Sprintf("sha256:%064d", i))
		have[i] = ok
	}
	want := map[int]bool{0: true, 1: false, 2: false, 3: false, 4: false, 5: false, 6: true}
	if !maps.Equal(have, want) {
		t.Errorf("entries kept %v, want %v (the most recently used that fit, and the newest)", have, want)
	}
	size, _ := c.Size()
	newest, _ := randomLayer(t, 4000).Size()
	if size > c.Max+newest {
		t.Errorf("the cache holds %d bytes, over its bound %d by more than one entry", size, c.Max)
	}
	freed, err := c.Prune(0)
	if size, _ = c.Size(); err != nil || size != 0 || freed == 0 {
		t.Errorf("prune to 0: freed %d, %d bytes left, %v", freed, size, err)
	}
}

// A hit gives back the layer byte for byte, with its digests; a damaged
// one is a miss and is removed.
func TestLocalCacheVerifiesHits(t *testing.T) {
	c := &registry.LocalCache{Dir: t.TempDir()}
	l := randomLayer(t, 1000)
	if err := c.Put("sha256:"+fmt.Sprintf("%064x", 1), registry.Step{CreatedBy: "RUN x"}, l); err != nil {
		t.Fatal(err)
	}
	st, got, ok := c.Get("sha256:" + fmt.Sprintf("%064x", 1))
	if !ok || st.CreatedBy != "RUN x" {
		t.Fatalf("Get: %v %v", st, ok)
	}
	want, _ := l.Compressed()
	wb, _ := io.ReadAll(want)
	rc, _ := got.Compressed()
	gb, _ := io.ReadAll(rc)
	d1, _ := l.DiffID()
	d2, _ := got.DiffID()
	if !bytes.Equal(wb, gb) || d1 != d2 {
		t.Errorf("the cached layer differs from what was stored")
	}
	blobs, _ := filepath.Glob(filepath.Join(c.Dir, "blobs", "sha256", "*"))
	os.WriteFile(blobs[0], []byte("garbage"), 0o644)
	if _, _, ok := c.Get("sha256:" + fmt.Sprintf("%064x", 1)); ok {
		t.Error("a damaged layer was used")
	}
	if _, err := os.Stat(blobs[0]); !os.IsNotExist(err) {
		t.Errorf("the damaged layer is still there: %v", err)
	}
}
