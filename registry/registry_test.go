package registry_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/registry"
)

// failing serves a registry but refuses manifest PUTs whose body is an index.
func failing(t *testing.T) string {
	reg := ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") && r.Header.Get("Content-Type") == string(types.OCIImageIndex) {
			http.Error(w, "no indexes today", http.StatusForbidden)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func randomIndex(t *testing.T) v1.ImageIndex {
	t.Helper()
	img, err := random.Image(100, 2)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{
		Add:        img,
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}},
	})
}

func TestPushFailureBeforeIndexLeavesNoTag(t *testing.T) {
	host := failing(t)
	tag, _ := name.ParseReference(host + "/app:1")
	_, err := registry.Push(context.Background(), randomIndex(t), []name.Reference{tag}, registry.Options{})
	if err == nil {
		t.Fatal("push succeeded, want the index PUT to fail")
	}
	if _, err := remote.Head(tag); err == nil {
		t.Errorf("tag %s exists after a failed push", tag)
	}
}

func TestPushSetsEveryTagAfterTheIndex(t *testing.T) {
	var mu sync.Mutex
	var order []string
	reg := ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
			mu.Lock()
			order = append(order, r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])
			mu.Unlock()
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	idx := randomIndex(t)
	d, _ := idx.Digest()
	var tags []name.Reference
	for _, s := range []string{"/a:1", "/a:latest", "/b:1"} {
		r, _ := name.ParseReference(host + s)
		tags = append(tags, r)
	}
	if _, err := registry.Push(context.Background(), idx, tags, registry.Options{}); err != nil {
		t.Fatal(err)
	}
	seenTag := false
	for _, o := range order {
		isTag := !strings.HasPrefix(o, "sha256:")
		if seenTag && !isTag {
			t.Errorf("manifest %s pushed after a tag: order %v", o, order)
		}
		seenTag = seenTag || isTag
	}
	for _, tag := range tags {
		desc, err := remote.Head(tag)
		if err != nil || desc.Digest != d {
			t.Errorf("%s: %v %v, want %s", tag, desc, err, d)
		}
	}
}

func TestStorePutAndOpen(t *testing.T) {
	s := &registry.Store{Dir: t.TempDir()}
	idx := randomIndex(t)
	tag, _ := name.ParseReference("127.0.0.1:1/app:1")
	if err := s.Put(idx, []name.Reference{tag}); err != nil {
		t.Fatal(err)
	}
	again := randomIndex(t)
	if err := s.Put(again, []name.Reference{tag}); err != nil {
		t.Fatal(err)
	}
	src, err := registry.Open(context.Background(), "127.0.0.1:1/app:1", registry.Options{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := src.Digest()
	want, _ := again.Digest()
	if got != want {
		t.Errorf("store gives %s for the tag, want the newer %s", got, want)
	}
	img, _, err := src.ForPlatform(mustPlatform(t, "linux/amd64"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.ConfigFile(); err != nil {
		t.Errorf("reading stored image config: %v", err)
	}
	_, _, err = src.ForPlatform(mustPlatform(t, "linux/s390x"))
	if err == nil || !strings.Contains(err.Error(), "it has linux/amd64") {
		t.Errorf("missing platform error %v, want one listing the platforms there are", err)
	}
}

// A single-platform base serves only the platform its config names.
func TestSinglePlatformSource(t *testing.T) {
	img, err := random.Image(10, 1)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = "linux", "arm64", "v8"
	img, _ = mutate.ConfigFile(img, cf)
	host := failing(t) // refuses only indexes
	r, _ := name.ParseReference(host + "/one:1")
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	src, err := registry.Open(context.Background(), r.String(), registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := src.ForPlatform(mustPlatform(t, "linux/arm64")); err != nil {
		t.Errorf("linux/arm64 of a linux/arm64/v8 image: %v", err)
	}
	_, _, err = src.ForPlatform(mustPlatform(t, "linux/amd64"))
	if err == nil || !strings.Contains(err.Error(), "single-platform image for linux/arm64, not linux/amd64") {
		t.Errorf("linux/amd64 of a linux/arm64 image: %v", err)
	}
}

// Builds that store at once, in several processes or goroutines, lose no
// name: index.json is rewritten under a lock.
func TestStorePutsDoNotLoseNames(t *testing.T) {
	s := &registry.Store{Dir: t.TempDir()}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tag, _ := name.ParseReference(fmt.Sprintf("127.0.0.1:1/app:%d", i))
			if err := s.Put(randomIndex(t), []name.Reference{tag}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i := range 8 {
		if _, err := registry.Open(context.Background(), fmt.Sprintf("127.0.0.1:1/app:%d", i), registry.Options{Store: s}); err != nil {
			t.Errorf("app:%d: %v", i, err)
		}
	}
}

func mustPlatform(t *testing.T, s string) platform.Platform {
	t.Helper()
	p, err := platform.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
