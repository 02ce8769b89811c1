// Command countproxy is the benchmark's view of what a client pushed: a
// reverse proxy in front of a registry that counts the request bytes of
// blob uploads and manifest writes.
//
//	countproxy LISTEN-ADDR REGISTRY-URL
//
// GET /_bench/bytes prints the count; POST /_bench/reset zeroes it.
package main

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
)

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: countproxy LISTEN-ADDR REGISTRY-URL")
	}
	target, err := url.Parse(os.Args[2])
	if err != nil {
		log.Fatal(err)
	}
	var pushed atomic.Int64
	proxy := httputil.NewSingleHostReverseProxy(target)
	http.HandleFunc("/_bench/bytes", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, pushed.Load())
	})
	http.HandleFunc("/_bench/reset", func(w http.ResponseWriter, r *http.Request) { pushed.Store(0) })
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writes := r.Method == http.MethodPut || r.Method == http.MethodPatch || r.Method == http.MethodPost
		if writes && (strings.Contains(r.URL.Path, "/blobs/uploads/") || strings.Contains(r.URL.Path, "/manifests/")) {
			r.Body = &counted{r.Body, &pushed}
		}
		proxy.ServeHTTP(w, r)
	})
	log.Fatal(http.ListenAndServe(os.Args[1], nil))
}

type counted struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *counted) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.n.Add(int64(n))
	return n, err
}
