package registry

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var fastRetry = Retry{Attempts: 4, Delay: time.Millisecond, MaxDelay: 10 * time.Millisecond}

func client(r Retry) *http.Client {
	return &http.Client{Transport: newRetrying(nil, r)}
}

// 5xx and 429 answers are tried again, Retry-After bounded by MaxDelay; a
// request that fails every try says how often it was tried.
func TestRetryStatuses(t *testing.T) {
	var n atomic.Int32
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch k := n.Add(1); {
		case down.Load():
			w.WriteHeader(http.StatusServiceUnavailable)
		case k == 1:
			w.Header().Set("Retry-After", "3600") // an hour, bounded to MaxDelay
			w.WriteHeader(http.StatusTooManyRequests)
		case k == 2:
			w.WriteHeader(http.StatusBadGateway)
		default:
			io.WriteString(w, "ok")
		}
	}))
	defer srv.Close()
	resp, err := client(fastRetry).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" || n.Load() != 3 {
		t.Errorf("got %q after %d requests, want ok after 3", body, n.Load())
	}

	n.Store(0)
	down.Store(true)
	resp, err = client(fastRetry).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want the last failure's", resp.StatusCode)
	}
	if got := n.Load(); got != int32(fastRetry.Attempts) {
		t.Errorf("%d tries, want %d", got, fastRetry.Attempts)
	}
}

// A dropped connection is tried again and, after the last try, reported
// with the request and the number of tries.
func TestRetryResets(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close()
	}))
	defer srv.Close()
	_, err := client(fastRetry).Head(srv.URL + "/v2/x/blobs/sha256:abc")
	if err == nil || !strings.Contains(err.Error(), "HEAD "+srv.URL+"/v2/x/blobs/sha256:abc") || !strings.Contains(err.Error(), "4 tries") {
		t.Errorf("error %v, want one naming the request and its 4 tries", err)
	}
	if n.Load() != 4 {
		t.Errorf("%d tries, want 4", n.Load())
	}
}

// A body cut short is read on with a Range request, or read again from a
// server that ignores ranges; the reader gets every byte once.
func TestRetryResumesBodies(t *testing.T) {
	blob := bytes.Repeat([]byte("0123456789abcdef"), 64<<10)
	for _, ranges := range []bool{true, false} {
		t.Run(fmt.Sprint("ranges=", ranges), func(t *testing.T) {
			var asked []string
			var n atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked = append(asked, r.Header.Get("Range"))
				var start int
				if ranges {
					fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &start)
				}
				w.Header().Set("Content-Length", fmt.Sprint(len(blob)-start))
				if start > 0 {
					w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(blob)-1, len(blob)))
					w.WriteHeader(http.StatusPartialContent)
				}
				if n.Add(1) <= 2 { // twice, a third of what is left, then the connection drops
					w.Write(blob[start : start+(len(blob)-start)/3])
					w.(http.Flusher).Flush()
					c, _, _ := w.(http.Hijacker).Hijack()
					c.Close()
					return
				}
				w.Write(blob[start:])
			}))
			defer srv.Close()
			resp, err := client(fastRetry).Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !bytes.Equal(got, blob) {
				t.Fatalf("read %d bytes (%v), want the %d of the blob", len(got), err, len(blob))
			}
			if len(asked) != 3 || asked[0] != "" || !strings.HasPrefix(asked[1], "bytes=") {
				t.Errorf("requests with ranges %q, want none, then two resumes", asked)
			}
		})
	}
}

// An upload's PATCH is never sent twice by the transport: its session
// has part of the body, and the upload starts again from a fresh one.
func TestRetryLeavesPatchToTheUpload(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPatch, srv.URL, strings.NewReader("chunk"))
	resp, err := client(fastRetry).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n.Load() != 1 {
		t.Errorf("PATCH sent %d times, want once", n.Load())
	}
	if !retryable(fmt.Errorf("wrapped: %w", io.ErrUnexpectedEOF)) || retryable(&gaveUpError{req, 4, io.EOF}) {
		t.Error("an upload should restart after a broken PATCH, never after a request that used all its tries")
	}
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// A registry's answer to the ping is asked for once: 401 with its
// challenge, or the plain HTTP that answers a TLS handshake (the https
// probe of a plain-HTTP registry); pings sent at the same time wait for
// one answer; anything else (a 404 here) is asked again.
func TestPingAnswersKept(t *testing.T) {
	var pinged atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pinged.Add(1)
		time.Sleep(20 * time.Millisecond)
		if r.URL.Path != "/v2/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="https://auth.example/token"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	l := &countingListener{Listener: srv.Listener}
	srv.Listener = l
	srv.Start()
	defer srv.Close()
	c := client(fastRetry)
	host := strings.TrimPrefix(srv.URL, "http://")

	for i := range 2 {
		_, err := c.Get("https://" + host + "/v2/")
		if err == nil || !strings.Contains(err.Error(), "HTTP response to HTTPS client") {
			t.Fatalf("https ping %d of a plain-HTTP registry: %v", i, err)
		}
	}
	if n := l.n.Load(); n != 1 {
		t.Errorf("the https probe connected %d times, want once", n)
	}

	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			resp, err := c.Get("http://" + host + "/v2/")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
				t.Errorf("ping answered %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	wg.Wait()
	if n := pinged.Load(); n != 1 {
		t.Errorf("5 pings reached the registry %d times, want once", n)
	}

	for range 2 {
		resp, err := c.Get("http://" + host + "/v2/?other")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if n := pinged.Load(); n != 3 {
		t.Errorf("requests other than the ping reached the registry %d times, want 2", n-1)
	}
}
