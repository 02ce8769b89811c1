// Package registrytest is manifold's test kit for registries: an in-memory
// registry that counts what clients ask of it, Debian's real distribution
// registry started on a loopback port, and prerequisites that skip on a
// laptop but fail in CI.
package registrytest

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

// InCI tells whether the tests run in CI, where a missing prerequisite is a
// failure and never a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require skips the test when ok is false, or fails it in CI.
func Require(t testing.TB, ok bool, format string, a ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, a...)
	if InCI() {
		t.Fatalf("prerequisite missing in CI: %s", msg)
	}
	t.Skipf("prerequisite missing: %s", msg)
}

// Request is one request a registry received.
type Request struct {
	Method, Path string
	Query        url.Values
}

// Log records the requests a registry received.
type Log struct {
	mu   sync.Mutex
	reqs []Request
}

func (l *Log) add(r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs = append(l.reqs, Request{r.Method, r.URL.Path, r.URL.Query()})
}

// Requests returns what was received so far.
func (l *Log) Requests() []Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Request(nil), l.reqs...)
}

// Reset forgets what was received so far.
func (l *Log) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs = nil
}

// BlobGets counts GET requests for the blob with this digest.
func (l *Log) BlobGets(digest string) int {
	return l.count(func(r Request) bool {
		return r.Method == http.MethodGet && strings.HasSuffix(r.Path, "/blobs/"+digest)
	})
}

// Uploads counts finished blob uploads of this digest (a cross-repository
// mount is not an upload).
func (l *Log) Uploads(digest string) int {
	return l.count(func(r Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.Path, "/blobs/uploads/") && r.Query.Get("digest") == digest
	})
}

// Mounts counts cross-repository mount requests for this digest.
func (l *Log) Mounts(digest string) int {
	return l.count(func(r Request) bool {
		return r.Method == http.MethodPost && r.Query.Get("mount") == digest
	})
}

func (l *Log) count(match func(Request) bool) int {
	n := 0
	for _, r := range l.Requests() {
		if match(r) {
			n++
		}
	}
	return n
}

// Memory starts an in-memory registry (go-containerregistry's) on a loopback
// port and returns its host:port and the log of its requests.
func Memory(t testing.TB) (string, *Log) {
	t.Helper()
	rl := &Log{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(rl.wrap(reg))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), rl
}

// Distribution starts Debian's docker-registry (the CNCF distribution
// registry) on a free 127.0.0.1 port, storing in a temporary directory, and
// returns the host:port of a logging proxy in front of it.
func Distribution(t testing.TB) (string, *Log) {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	Require(t, err == nil, "docker-registry not installed (apt-get install docker-registry)")
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "data"), addr)
	cfgFile := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfgFile)
	out, _ := os.Create(filepath.Join(dir, "registry.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting docker-registry: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		out.Close()
	})
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			return logged(t, addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	logged, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
	t.Fatalf("docker-registry did not answer on %s:\n%s", addr, logged)
	return "", nil
}

// logged puts a logging reverse proxy in front of the registry at addr.
func logged(t testing.TB, addr string) (string, *Log) {
	rl := &Log{}
	target, _ := url.Parse("http://" + addr)
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(rl.wrap(proxy))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), rl
}

func (l *Log) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.add(r)
		h.ServeHTTP(w, r)
	})
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// LockHost holds a lock, shared by every test process of the machine, for
// the rest of the test: for tests that change host-wide state (the host's
// binfmt_misc) and must not overlap with tests of other packages.
func LockHost(t testing.TB, name string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "manifold-test-"+name+".lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
}
