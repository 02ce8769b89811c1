package registry

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// A tag that named the result when the build began, and was moved by
// someone else while it ran, is set to the result all the same: an old
// answer to what a tag names is asked again before it spares a push.
func TestTagMovedDuringTheBuildIsSet(t *testing.T) {
	srv := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	tag, _ := name.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/app:1")
	index := func() v1.ImageIndex {
		img, err := random.Image(10, 1)
		if err != nil {
			t.Fatal(err)
		}
		return mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img})
	}
	ours, theirs := index(), index()
	ctx := context.Background()
	if _, err := Push(ctx, ours, []name.Reference{tag}, Options{}); err != nil {
		t.Fatal(err)
	}
	p := NewPusher(ctx, []name.Reference{tag}, Options{})
	<-p.asked
	if _, err := Push(ctx, theirs, []name.Reference{tag}, Options{}); err != nil {
		t.Fatal(err)
	}
	p.when = time.Now().Add(-time.Hour) // the build took an hour
	want, _ := ours.Digest()
	if _, err := p.Push(ctx, ours); err != nil {
		t.Fatal(err)
	}
	if got, err := remote.Head(tag); err != nil || got.Digest != want {
		t.Errorf("the tag names %v (%v) after the push, want %s", got, err, want)
	}
}
