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

// An image's config goes up in two requests rather than four. ggcr asks
// whether a blob is there (HEAD), opens an upload (POST), streams the blob
// (PATCH) and closes the upload (PUT); a new image's config is never there
// already, and is small: manifold opens the upload and sends the config
// whole in the closing PUT, the distribution spec's monolithic upload. A
// registry that does not take it so gets the config the long way.

// maxMonolithic bounds the blobs sent so: what is held in memory whole.
const maxMonolithic = 1 << 20

// uploader sends small blobs in one PUT, with a client per repository
// that holds its push token.
type uploader struct {
	o       Options
	mu      sync.Mutex
	clients map[name.Repository]*repoClient
}

type repoClient struct {
	once   sync.Once
	client *http.Client
	err    error
}

func newUploader(o Options) *uploader {
	return &uploader{o: o, clients: map[name.Repository]*repoClient{}}
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
		kc := u.o.Keychain
		if kc == nil {
			kc = authn.DefaultKeychain
		}
		auth, err := authn.Resolve(ctx, kc, repo)
		if err != nil {
			rc.err = err
			return
		}
		rt := transport.NewUserAgent(newRetrying(u.o.baseTransport(), u.o.Retry), "manifold")
		t, err := transport.NewWithContext(ctx, repo.Registry, auth, rt, []string{repo.Scope(transport.PushScope)})
		rc.client, rc.err = &http.Client{Transport: t}, err
	})
	return rc.client, rc.err
}

// put sends l, a blob of at most maxMonolithic bytes, to repo in a POST and
// a PUT. False, with no error, when the registry answered otherwise than
// the spec says: l must go the long way.
func (u *uploader) put(ctx context.Context, repo name.Repository, l v1.Layer) (bool, error) {
	size, err := l.Size()
	if err != nil || size > maxMonolithic {
		return false, err
	}
	d, err := l.Digest()
	if err != nil {
		return false, err
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
	c, err := u.client(ctx, repo)
	if err != nil {
		return false, nil // the long way tells what is wrong
	}
	start := url.URL{Scheme: repo.Scheme(), Host: repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/blobs/uploads/", repo.RepositoryStr())}
	resp, err := send(ctx, c, http.MethodPost, start.String(), nil)
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
