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
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/manifold-build/manifold/registry"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// twoPlatforms is an index of imgs as linux/amd64 and linux/arm64.
func twoPlatforms(t *testing.T, imgs ...v1.Image) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for i, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", []string{"amd64", "arm64"}[i]
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        mutate.MediaType(img, types.OCIManifestSchema1),
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture}},
		})
	}
	return idx
}

// blobsOf lists the layers and config of each image of idx.
func blobsOf(t *testing.T, idx v1.ImageIndex) map[string]bool {
	t.Helper()
	blobs := map[string]bool{}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range m.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		im, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		blobs[im.Config.Digest.String()] = true
		for _, l := range im.Layers {
			blobs[l.Digest.String()] = true
		}
	}
	return blobs
}

// A push to a tag that names what this machine pushed before asks the
// registry nothing it knows the answer to: not the ping again, not the
// blobs under the tag's index. A push of what the tag names already is one
// request; a runner without the metadata asks for every blob, and pushes
// the same.
func TestPushAsksOnlyWhatItCannotKnow(t *testing.T) {
	ctx := context.Background()
	host, rl := registrytest.Memory(t)
	tag, _ := name.ParseReference(host + "/app:1")
	tags := []name.Reference{tag}
	o := registry.Options{MetaDir: t.TempDir()}
	var imgs []v1.Image
	for range 2 {
		img, err := random.Image(100, 3)
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	first := twoPlatforms(t, imgs...)
	if _, err := registry.Push(ctx, first, tags, o); err != nil {
		t.Fatal(err)
	}
	pings := func() int {
		n := 0
		for _, r := range rl.Requests() {
			if r.Path == "/v2/" {
				n++
			}
		}
		return n
	}
	if n := pings(); n != 1 {
		t.Errorf("the first push pinged the registry %d times, want 1", n)
	}

	// The next build: one more layer on each platform.
	for i, img := range imgs {
		l, err := random.Layer(100, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		if imgs[i], err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	next := twoPlatforms(t, imgs...)
	rl.Reset()
	p := registry.NewPusher(ctx, tags, o)
	for deadline := time.Now().Add(10 * time.Second); len(rl.Requests()) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("NewPusher asked nothing of the tag before the push")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := rl.Requests()[0]; r.Method != http.MethodHead || !strings.HasSuffix(r.Path, "/manifests/1") {
		t.Errorf("NewPusher sent %s %s, want HEAD of the tag", r.Method, r.Path)
	}
	rl.Reset()
	if _, err := p.Push(ctx, next); err != nil {
		t.Fatal(err)
	}
	held := blobsOf(t, first)
	sent, asked := map[string]bool{}, map[string]bool{}
	patches := 0
	for _, r := range rl.Requests() {
		if r.Method == http.MethodPatch {
			patches++
		}
		if r.Method == http.MethodHead {
			asked[r.Path[strings.LastIndex(r.Path, "/")+1:]] = true
		}
		switch d := r.Path[strings.LastIndex(r.Path, "/")+1:]; {
		case r.Path == "/v2/":
			t.Errorf("pinged again")
		case strings.Contains(r.Path, "/manifests/") && r.Method != http.MethodPut:
			t.Errorf("%s %s: the tag was asked for before the push", r.Method, r.Path)
		case strings.Contains(r.Path, "/blobs/sha256:") && held[d]:
			t.Errorf("%s %s: a blob the tag's index holds", r.Method, r.Path)
		case r.Method == http.MethodPut && r.Query.Get("digest") != "":
			sent[r.Query.Get("digest")] = true
		}
	}
	for d := range blobsOf(t, next) {
		if !held[d] && !sent[d] {
			t.Errorf("new blob %s not uploaded", d)
		}
	}
	if patches != 0 {
		t.Errorf("%d uploads streamed, want none: small blobs go whole in their PUT", patches)
	}
	for _, img := range imgs {
		m, _ := img.Manifest()
		if l := m.Layers[len(m.Layers)-1].Digest.String(); !asked[l] {
			t.Errorf("the new layer %s was not looked for before it was sent", l)
		}
	}
	nm, _ := next.IndexManifest()
	for _, d := range nm.Manifests {
		img, _ := next.Image(d.Digest)
		if c, _ := img.ConfigName(); asked[c.String()] {
			t.Errorf("the new config %s was looked for: a new image's config is never there", c)
		}
	}
	got, err := remote.Index(tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(got); err != nil {
		t.Errorf("the pushed index is not whole in the registry: %v", err)
	}

	rl.Reset()
	if _, err := registry.Push(ctx, next, tags, o); err != nil {
		t.Fatal(err)
	}
	if reqs := rl.Requests(); len(reqs) != 1 || reqs[0].Method != http.MethodHead {
		t.Errorf("pushing what the tag names sent %v, want its HEAD alone", reqs)
	}

	// Without the metadata nothing is known: every blob is asked for.
	other, _ := name.ParseReference(host + "/app:2")
	if _, err := registry.Push(ctx, first, []name.Reference{other}, registry.Options{}); err != nil {
		t.Fatal(err)
	}
	rl.Reset()
	if _, err := registry.Push(ctx, next, []name.Reference{other}, registry.Options{}); err != nil {
		t.Fatal(err)
	}
	looked, unknown := 0, 0
	for d := range blobsOf(t, next) {
		if held[d] {
			unknown++
		}
	}
	for _, r := range rl.Requests() {
		if r.Method == http.MethodHead && strings.Contains(r.Path, "/blobs/") && held[r.Path[strings.LastIndex(r.Path, "/")+1:]] {
			looked++
		}
	}
	if looked != unknown {
		t.Errorf("a runner without metadata asked for %d of the %d blobs it could not know of", looked, unknown)
	}
}

// A registry that takes no blob whole in the PUT that closes its upload
// gets the configs the long way, and the push is whole.
func TestPushWithoutMonolithicUploads(t *testing.T) {
	reg := ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)))
	var refused atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") && r.ContentLength > 0 {
			refused.Add(1)
			http.Error(w, `{"errors":[{"code":"UNSUPPORTED"}]}`, http.StatusBadRequest)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	img, err := random.Image(100, 2)
	if err != nil {
		t.Fatal(err)
	}
	idx := twoPlatforms(t, img, img)
	tag, _ := name.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/app:1")
	if _, err := registry.Push(context.Background(), idx, []name.Reference{tag}, registry.Options{}); err != nil {
		t.Fatal(err)
	}
	if refused.Load() == 0 {
		t.Error("no config was sent whole")
	}
	got, err := remote.Index(tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(got); err != nil {
		t.Errorf("the pushed index is not whole in the registry: %v", err)
	}
}

// A blob that several platforms' images share is sent once.
func TestSharedBlobSentOnce(t *testing.T) {
	host, rl := registrytest.Memory(t)
	img, err := random.Image(100, 3)
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.ParseReference(host + "/app:1")
	if _, err := registry.Push(context.Background(), twoPlatforms(t, img, img), []name.Reference{tag}, registry.Options{}); err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	for _, l := range m.Layers {
		if n := rl.Uploads(l.Digest.String()); n != 1 {
			t.Errorf("layer %s, which both platforms have, was uploaded %d times", l.Digest, n)
		}
	}
}

// A push that a registry refuses fails at once, saying why. Its first
// refusal cancels the requests under way, which then fail with that
// refusal as their context's cause: none is tried again (each request goes
// at most twice: manifold's way, then ggcr's), and none leaves "context
// canceled" as the reason.
func TestRefusedPushSaysWhy(t *testing.T) {
	var mu sync.Mutex
	sent := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sent[r.Method+" "+r.URL.Path]++
		mu.Unlock()
		if r.URL.Path != "/v2/" {
			time.Sleep(time.Duration(len(r.URL.Path)%7) * time.Millisecond) // answers in any order
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="registry"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
	}))
	defer srv.Close()
	shared, err := random.Layer(100, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	var imgs []v1.Image
	for range 2 {
		img, err := random.Image(100, 2)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, shared); err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	idx := twoPlatforms(t, imgs...)
	for i := range 10 {
		tag, _ := name.ParseReference(fmt.Sprintf("%s/app%d:1", strings.TrimPrefix(srv.URL, "http://"), i))
		_, err := registry.Push(context.Background(), idx, []name.Reference{tag}, registry.Options{})
		if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "context canceled") {
			t.Fatalf("push %d: %v; want the registry's refusal", i, err)
		}
	}
	mu.Lock() // cancelled requests may still be arriving
	defer mu.Unlock()
	for r, n := range sent {
		if strings.HasPrefix(r, "HEAD ") && n > 2 {
			t.Errorf("%s sent %d times: tried again", r, n)
		}
	}
}
