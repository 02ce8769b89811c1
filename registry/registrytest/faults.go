package registrytest

import (
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fault is one way a busy registry or a flaky network fails a request.
type Fault int

const (
	ServerError Fault = iota // a 500, 502 or 503, the request not passed on
	TooMany                  // a 429 with Retry-After
	Reset                    // the connection closed with no answer
	Slow                     // the answer trickles in small pieces
	Truncate                 // a GET's body cut off half way (its full Content-Length announced)
)

// AllFaults are the kinds Faulty injects unless told otherwise.
var AllFaults = []Fault{ServerError, TooMany, Reset, Slow, Truncate}

func (f Fault) String() string {
	return [...]string{"server-error", "too-many", "reset", "slow", "truncate"}[f]
}

// Faults says what Faulty injects: a share of requests (Rate, 0 to 1), of
// the given Kinds (default AllFaults), chosen by Seed.
type Faults struct {
	Rate  float64
	Seed  uint64
	Kinds []Fault
}

// FaultLog counts the faults injected, by kind.
type FaultLog struct {
	mu     sync.Mutex
	n      map[Fault]int
	seen   map[string]int
	faults Faults
}

// Set changes what is injected from now on, and forgets the counts.
func (l *FaultLog) Set(f Faults) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.faults, l.n, l.seen = f, map[Fault]int{}, map[string]int{}
}

// Count is how many faults of kind were injected.
func (l *FaultLog) Count(kind Fault) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[kind]
}

// Total is how many faults were injected.
func (l *FaultLog) Total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := 0
	for _, n := range l.n {
		t += n
	}
	return t
}

func (l *FaultLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for _, k := range AllFaults {
		if l.n[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, l.n[k]))
		}
	}
	return strings.Join(parts, ", ")
}

var uploadSession = regexp.MustCompile(`/blobs/uploads/[^/]+$`)

// pick decides the fate of one request from the seed and what the request
// is (its method, its path without upload session IDs, the digest it names,
// its length, and how many such requests came before), so that a seed
// injects the same faults into the same requests, run after run.
func (l *FaultLog) pick(r *http.Request) (Fault, bool) {
	key := fmt.Sprintf("%s %s %s %d", r.Method, uploadSession.ReplaceAllString(r.URL.Path, "/blobs/uploads/-"), r.URL.Query().Get("digest"), r.ContentLength)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[key]++
	h := fnv.New64a()
	fmt.Fprintf(h, "%d %s %d", l.faults.Seed, key, l.seen[key])
	v := h.Sum64()
	if float64(v%1_000_000)/1_000_000 >= l.faults.Rate {
		return 0, false
	}
	kinds := l.faults.Kinds
	if len(kinds) == 0 {
		kinds = AllFaults
	}
	kind := kinds[(v/1_000_000)%uint64(len(kinds))]
	if kind == Truncate && r.Method != http.MethodGet {
		kind = ServerError
	}
	l.n[kind]++
	return kind, true
}

// Faulty puts a proxy that injects faults in front of the registry at
// target (host:port) and returns its host:port, on a loopback address.
func Faulty(t testing.TB, target string, f Faults) (string, *FaultLog) {
	t.Helper()
	l := &FaultLog{n: map[Fault]int{}, seen: map[string]int{}, faults: f}
	u, _ := url.Parse("http://" + target)
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind, ok := l.pick(r)
		if !ok {
			proxy.ServeHTTP(w, r)
			return
		}
		switch kind {
		case ServerError:
			codes := []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable}
			http.Error(w, "injected fault", codes[l.Total()%len(codes)])
		case TooMany:
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"injected"}]}`, http.StatusTooManyRequests)
		case Reset:
			io.Copy(io.Discard, io.LimitReader(r.Body, 1<<10))
			if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
				c.Close()
			}
		case Slow:
			proxy.ServeHTTP(&trickle{ResponseWriter: w}, r)
		case Truncate:
			proxy.ServeHTTP(&truncating{ResponseWriter: w}, r)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), l
}

// trickle writes an answer in 4 KiB pieces, a millisecond apart.
type trickle struct{ http.ResponseWriter }

func (w *trickle) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 4<<10)
		m, err := w.ResponseWriter.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		w.ResponseWriter.(http.Flusher).Flush()
		time.Sleep(time.Millisecond)
		p = p[k:]
	}
	return n, nil
}

// truncating passes on the headers, Content-Length included, and half of
// the body, then drops the connection.
type truncating struct {
	http.ResponseWriter
	left   int64
	status int
}

func (w *truncating) WriteHeader(code int) {
	w.status = code
	n, err := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64)
	if err != nil || code != http.StatusOK {
		n = -1
	}
	w.left = n / 2
	w.ResponseWriter.WriteHeader(code)
}

func (w *truncating) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.left < 0 {
		return w.ResponseWriter.Write(p)
	}
	if int64(len(p)) <= w.left {
		w.left -= int64(len(p))
		return w.ResponseWriter.Write(p)
	}
	w.ResponseWriter.Write(p[:w.left])
	w.ResponseWriter.(http.Flusher).Flush()
	if c, _, err := w.ResponseWriter.(http.Hijacker).Hijack(); err == nil {
		c.Close()
	}
	panic(http.ErrAbortHandler)
}
