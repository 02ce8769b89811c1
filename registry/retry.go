package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Retry bounds how a failed registry request is tried again: on a 5xx, a
// 408 or a 429 (waiting as long as Retry-After asks, up to MaxDelay), a
// reset or refused connection, a timeout, and a body cut short (read on
// from where it broke with a Range request). An upload whose session fails
// is started again from a fresh session.
type Retry struct {
	Attempts int           // tries of one request, the first included; default 6
	Delay    time.Duration // wait before the second try, doubled for each next one (with jitter); default 500ms
	MaxDelay time.Duration // the longest single wait; default 15s
}

// DefaultRetry is what a CI runner wants: a registry that fails a request
// in five is not noticed, one that is down fails in about half a minute.
var DefaultRetry = Retry{Attempts: 6, Delay: 500 * time.Millisecond, MaxDelay: 15 * time.Second}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = DefaultRetry.Attempts
	}
	if r.Delay <= 0 {
		r.Delay = DefaultRetry.Delay
	}
	if r.MaxDelay <= 0 {
		r.MaxDelay = max(DefaultRetry.MaxDelay, r.Delay)
	}
	return r
}

// wait is the pause before try number attempt+1: exponential, capped,
// with full jitter over its upper half so that parallel clients spread.
func (r Retry) wait(attempt int) time.Duration {
	d := r.Delay << min(attempt-1, 20)
	if d > r.MaxDelay || d <= 0 {
		d = r.MaxDelay
	}
	return d/2 + rand.N(d/2+1)
}

// options are ggcr's own retry settings: whole uploads start again from a
// fresh session when a step of one fails; single requests are retried
// below, by retrying, so ggcr's transport retries none (no status codes,
// and no error that retrying already gave up on).
func (r Retry) options() []remote.Option {
	return []remote.Option{
		remote.WithRetryBackoff(remote.Backoff{Duration: r.Delay, Factor: 2, Jitter: 0.5, Steps: r.Attempts, Cap: r.MaxDelay}),
		remote.WithRetryStatusCodes(),
		remote.WithRetryPredicate(retryable),
	}
}

// retryable tells ggcr which failed operations to start again.
func retryable(err error) bool {
	var gaveUp *gaveUpError
	var ue *url.Error
	switch {
	case err == nil, errors.As(err, &gaveUp), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.As(err, &ue):
		// A request that got no answer: worth another try for a network
		// fault only. One whose context was cancelled carries the cause,
		// which may be another request's refusal.
		return transient(ue.Err)
	case transient(err):
		return true
	}
	var te *transport.Error
	if errors.As(err, &te) {
		if te.Temporary() {
			return true
		}
		for _, d := range te.Errors {
			if d.Code == transport.BlobUploadUnknownErrorCode {
				return true // the session broke: a new one will do
			}
		}
	}
	return false
}

// transient is a network fault worth another try: a connection that
// failed, broke or timed out (not a *url.Error as such, which wraps
// whatever ended a request).
func transient(err error) bool {
	var op *net.OpError
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) ||
		errors.As(err, &op) || errors.As(err, &ne) && ne.Timeout()
}

// gaveUpError is a request that failed every try.
type gaveUpError struct {
	req      *http.Request
	attempts int
	err      error
}

func (e *gaveUpError) Error() string {
	return fmt.Sprintf("%s %s: %v (%d tries)", e.req.Method, e.req.URL.Redacted(), e.err, e.attempts)
}

func (e *gaveUpError) Unwrap() error { return e.err }

// retrying is the HTTP transport that carries out Retry.
type retrying struct {
	inner http.RoundTripper
	r     Retry
}

func newRetrying(inner http.RoundTripper, r Retry) *retrying {
	if inner == nil {
		inner = remote.DefaultTransport
	}
	return &retrying{inner: inner, r: r.withDefaults()}
}

func (t *retrying) RoundTrip(req *http.Request) (*http.Response, error) {
	if isPing(req) {
		return pings.ping(req, t.send)
	}
	resp, err := t.send(req)
	if err == nil && req.Method == http.MethodGet && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent) {
		resp.Body = &resuming{t: t, req: req, body: resp.Body, size: resp.ContentLength}
	}
	return resp, err
}

// send sends req, again while the answer or the error says to (and req can
// be sent again).
func (t *retrying) send(req *http.Request) (*http.Response, error) {
	if !replayable(req) {
		return t.inner.RoundTrip(req)
	}
	for attempt := 1; ; attempt++ {
		try := req
		if attempt > 1 && req.Body != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			try = req.Clone(req.Context())
			try.Body = body
		}
		resp, err := t.inner.RoundTrip(try)
		wait, again := t.verdict(req, resp, err, attempt)
		if !again || attempt >= t.r.Attempts {
			if err != nil && again {
				return nil, &gaveUpError{req, attempt, err}
			}
			return resp, err
		}
		if resp != nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		if err := sleep(req.Context(), wait); err != nil {
			return nil, err
		}
	}
}

// replayable requests can be sent again as they are. An upload's PATCH is
// not: its session has taken part of the body, and ggcr starts the whole
// upload again from a fresh session instead.
func replayable(req *http.Request) bool {
	if req.Method == http.MethodPatch {
		return false
	}
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// verdict says whether and after how long to try again.
func (t *retrying) verdict(req *http.Request, resp *http.Response, err error, attempt int) (time.Duration, bool) {
	if err != nil {
		return t.r.wait(attempt), transient(err) && req.Context().Err() == nil
	}
	switch resp.StatusCode {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
	default:
		return 0, false
	}
	wait := t.r.wait(attempt)
	if after, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
		wait = max(wait, min(after, t.r.MaxDelay))
	}
	return wait, true
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// resuming is a response body that, cut short, is read on from where it
// broke: a Range request for the rest (or the whole again, skipping what
// was read, from a registry that ignores ranges). Whoever reads it still
// checks what it read against its digest.
type resuming struct {
	t       *retrying
	req     *http.Request
	body    io.ReadCloser
	size    int64 // -1: unknown
	read    int64
	resumes int
}

func (r *resuming) Read(p []byte) (int, error) {
	for {
		n, err := r.body.Read(p)
		r.read += int64(n)
		switch {
		case err == nil:
			return n, nil
		case err == io.EOF && (r.size < 0 || r.read >= r.size):
			return n, io.EOF
		case err == io.EOF:
			err = io.ErrUnexpectedEOF
		}
		if !transient(err) || r.req.Context().Err() != nil || r.resumes+1 >= r.t.r.Attempts {
			return n, err
		}
		r.resumes++
		if serr := sleep(r.req.Context(), r.t.r.wait(r.resumes)); serr != nil {
			return n, serr
		}
		if rerr := r.resume(); rerr != nil {
			return n, fmt.Errorf("%w (resuming: %v)", err, rerr)
		}
		if n > 0 {
			return n, nil
		}
	}
}

// resume asks for the rest of the body.
func (r *resuming) resume() error {
	r.body.Close()
	r.body = http.NoBody
	req := r.req.Clone(r.req.Context())
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-", r.read))
	resp, err := r.t.send(req)
	if err != nil {
		return err
	}
	body := resp.Body
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if !strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", r.read)) {
			body.Close()
			return fmt.Errorf("registry answered range %d- with %q", r.read, resp.Header.Get("Content-Range"))
		}
	case http.StatusOK:
		if _, err := io.CopyN(io.Discard, body, r.read); err != nil {
			body.Close()
			return err
		}
	default:
		body.Close()
		return fmt.Errorf("unexpected status %s", resp.Status)
	}
	r.body = body
	return nil
}

func (r *resuming) Close() error { return r.body.Close() }
