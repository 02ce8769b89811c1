package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// A small blob goes up in fewer requests than ggcr sends. ggcr asks
// whether a blob is there (HEAD), opens an upload (POST), streams the blob
// (PATCH) and closes the upload (PUT); manifold sends a small blob whole in
// the closing PUT, the distribution spec's monolithic upload, and does not
// ask for a new image's config, which is never there already. A registry
// that does not take a blob so gets it the long way.

// maxMonolithic bounds the blobs sent so: what is held in memory whole.
const maxMonolithic = 1 << 20

// uploader sends small blobs in one PUT, with a client per repository
// that holds its push token.
type uploader struct {
	o       Options
	mu      sync.Mutex
	clients map[name.Repository]*repoClient
	sends   map[string]*blobSend // by repository and digest: each blob is sent once
}

type blobSend struct {
	done chan struct{}
	sent bool
	err  error
}

type repoClient struct {
	once   sync.Once
	client *http.Client
	err    error
}

func newUploader(o Options) *uploader {
	return &uploader{o: o, clients: map[name.Repository]*repoClient{}, sends: map[string]*blobSend{}}
}

// client is repo's, authenticated for pushing (made once: a ping, which is
// kept, and a token where the registry hands them out).
func (u *uploader) client(ctx context.Context, repo name.Repository) (*http.Client, error) {
	u.mu.Lock()
	rc := u.clients[repo]
	if rc == nil {
		rc = &repoClient{}
		u.clients[repo] = rc
	}
	u.mu.Unlock()
	rc.once.Do(func() {
		auth, err := authn.Resolve(ctx, u.o.keychain(), repo)
		if err != nil {
			rc.err = err
			return
		}
		rt := transport.NewUserAgent(u.o.transport(), "manifold")
		t, err := transport.NewWithContext(ctx, repo.Registry, auth, rt, []string{repo.Scope(transport.PushScope)})
		rc.client, rc.err = &http.Client{Transport: t}, err
	})
	return rc.client, rc.err
}

// put sends l, a blob of at most maxMonolithic bytes, to repo in a POST and
// a PUT, after a HEAD that asks whether it is there when ask. True when it
// is there now; false, with no error, when the registry answered otherwise
// than the spec says: l must go the long way. A blob that several images
// share is sent once.
func (u *uploader) put(ctx context.Context, repo name.Repository, l v1.Layer, ask bool) (bool, error) {
	size, err := l.Size()
	if err != nil || size > maxMonolithic {
		return false, err
	}
	d, err := l.Digest()
	if err != nil {
		return false, err
	}
	key := repo.String() + "@" + d.String()
	u.mu.Lock()
	s := u.sends[key]
	if s != nil {
		u.mu.Unlock()
		select {
		case <-s.done:
			return s.sent, s.err
		case <-ctx.Done():
			return false, context.Cause(ctx)
		}
	}
	s = &blobSend{done: make(chan struct{})}
	u.sends[key] = s
	u.mu.Unlock()
	s.sent, s.err = u.send(ctx, repo, l, d, ask)
	close(s.done)
	return s.sent, s.err
}

func (u *uploader) send(ctx context.Context, repo name.Repository, l v1.Layer, d v1.Hash, ask bool) (bool, error) {
	c, err := u.client(ctx, repo)
	if err != nil {
		return false, nil // the long way tells what is wrong
	}
	v2 := url.URL{Scheme: repo.Scheme(), Host: repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/blobs/", repo.RepositoryStr())}
	if ask {
		resp, err := send(ctx, c, http.MethodHead, v2.JoinPath(d.String()).String(), nil)
		switch {
		case err != nil:
			return false, err
		case resp.StatusCode == http.StatusOK:
			return true, nil
		case resp.StatusCode != http.StatusNotFound:
			return false, nil
		}
	}
	rc, err := l.Compressed()
	if err != nil {
		return false, err
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return false, err
	}
	resp, err := send(ctx, c, http.MethodPost, v2.JoinPath("uploads").String()+"/", nil)
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusAccepted {
		return false, nil
	}
	loc, err := resp.Location()
	if err != nil {
		return false, nil
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	if resp, err = send(ctx, c, http.MethodPut, loc.String(), data); err != nil {
		return false, err
	}
	return resp.StatusCode == http.StatusCreated, nil
}

// send sends a request with body (none when nil) and reads the answer's
// body away.
func send(ctx context.Context, c *http.Client, method, u string, body []byte) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp, nil
}
