// Package registrytest is manifold's test kit for registries: an in-memory
// registry that counts what clients ask of it, Debian's real distribution
// registry started on a loopback port, and prerequisites that skip on a
// laptop but fail in CI.
package registrytest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
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
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"golang.org/x/crypto/bcrypt"

	"github.com/manifold-build/manifold/assemble/testkit"
)

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
// registry) on a unix socket, storing in a temporary directory, and returns
// the host:port (on 127.0.0.1) of a logging proxy in front of it.
func Distribution(t testing.TB) (string, *Log) {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "registry.sock")
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	serveDistribution(t, dir, fmt.Sprintf("http:\n  net: unix\n  addr: %s\n", sock), func() bool {
		resp, err := (&http.Client{Transport: tr}).Get("http://registry/v2/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return logged(t, tr)
}

// serveDistribution runs docker-registry for the rest of the test with a
// config of a quiet log, storage in dir/data, and rest (its http and auth
// sections), and waits until ready says it answers.
func serveDistribution(t testing.TB, dir, rest string, ready func() bool) {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	testkit.Require(t, err == nil, "docker-registry not installed (apt-get install docker-registry)")
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
`, filepath.Join(dir, "data")) + rest
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
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if ready() {
			return
		}
	}
	logged, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
	t.Fatalf("docker-registry did not answer:\n%s", logged)
}

// logged puts a logging reverse proxy, on a loopback port, in front of the
// registry that tr reaches.
func logged(t testing.TB, tr http.RoundTripper) (string, *Log) {
	rl := &Log{}
	target, _ := url.Parse("http://registry")
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = tr
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

// DistributionAuth starts Debian's docker-registry on a loopback port with
// TLS (a certificate from a test CA it makes) and htpasswd authentication
// for user and password. It returns the registry's host:port and the CA's
// PEM file.
func DistributionAuth(t testing.TB, user, password string) (host, caFile string) {
	t.Helper()
	dir := t.TempDir()
	caFile, certFile, keyFile := writeTestCA(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host = l.Addr().String()
	l.Close()
	serveDistribution(t, dir, fmt.Sprintf(`http:
  addr: %s
  tls:
    certificate: %s
    key: %s
auth:
  htpasswd:
    realm: manifold-test
    path: %s
`, host, certFile, keyFile, htpasswd), func() bool {
		c, err := net.Dial("tcp", host)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return host, caFile
}

// writeTestCA makes a CA and a certificate it signs for 127.0.0.1 and
// localhost, as PEM files in dir.
func writeTestCA(t testing.TB, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "manifold test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", srvDER), write("key.pem", "EC PRIVATE KEY", keyDER)
}
