package registry

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// pings keeps each registry's answer to the ping, GET /v2/, that ggcr
// sends before anything else for every repository it reads or writes (a
// build reads a base and writes a result: two pings or more, each a round
// trip, after a TLS probe where the registry speaks plain HTTP). An answer
// is the registry's word on how to authenticate, the same for every
// request: it is kept for a minute, and only when it is one (200 or 401).
// A TLS handshake answered in plain HTTP is kept too, so that the https
// probe of a plain-HTTP registry fails at once the next time, unsent.
var pings = pingCache{m: map[string]*pingAnswer{}}

const pingTTL = time.Minute

type pingCache struct {
	mu sync.Mutex
	m  map[string]*pingAnswer
}

// A pingAnswer is ready once done is closed; ok says it is an answer.
type pingAnswer struct {
	done   chan struct{}
	ok     bool
	status int
	header http.Header
	err    error
	at     time.Time
}

func isPing(req *http.Request) bool {
	return req.Method == http.MethodGet && req.URL.Path == "/v2/" && req.URL.RawQuery == "" &&
		req.Header.Get("Authorization") == ""
}

// ping answers req from the cache, or by sending it (with send) while
// pings of the same URL at the same time wait for its answer.
func (c *pingCache) ping(req *http.Request, send func(*http.Request) (*http.Response, error)) (*http.Response, error) {
	key := req.URL.String()
	c.mu.Lock()
	a := c.m[key]
	if a != nil {
		select {
		case <-a.done:
			if !a.ok || time.Since(a.at) > pingTTL {
				a = nil
			}
		default:
		}
	}
	if a == nil {
		a = &pingAnswer{done: make(chan struct{})}
		c.m[key] = a
		c.mu.Unlock()
		resp, err := send(req)
		a.keep(req, resp, err)
		close(a.done)
		return resp, err
	}
	c.mu.Unlock()
	select {
	case <-a.done:
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
	if !a.ok {
		return send(req)
	}
	return a.response(req)
}

// response is the answer again, for req.
func (a *pingAnswer) response(req *http.Request) (*http.Response, error) {
	if a.err != nil {
		return nil, a.err
	}
	return &http.Response{
		Status: http.StatusText(a.status), StatusCode: a.status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: a.header.Clone(), Body: http.NoBody, Request: req,
	}, nil
}

// keep keeps what resp or err says of req, if it is an answer; resp's body
// is read (a ping's is a few bytes) and given back unread.
func (a *pingAnswer) keep(req *http.Request, resp *http.Response, err error) {
	a.at = time.Now()
	switch {
	case err != nil && req.URL.Scheme == "https" && plainHTTP(err):
		a.err, a.ok = err, true
	case err == nil && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized):
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		a.status, a.header, a.ok = resp.StatusCode, resp.Header.Clone(), rerr == nil
	}
}

// plainHTTP tells whether err says a TLS handshake was answered in plain
// HTTP (as Go's http.Transport, or its tls package, words it).
func plainHTTP(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "server gave HTTP response to HTTPS client") ||
		strings.Contains(msg, "does not look like a TLS handshake")
}
