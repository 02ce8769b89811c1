package assemble

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/manifold-build/manifold/layers"
)

// isURL tells whether an ADD source is fetched over HTTP(S).
func isURL(src string) bool {
	return strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://")
}

// isGit tells whether an ADD source names a git repository, as BuildKit
// recognises one: git@host:..., git://..., ssh://..., or an HTTP(S) URL of
// a .git path or with a #ref.
func isGit(src string) bool {
	switch {
	case strings.HasPrefix(src, "git@"), strings.HasPrefix(src, "git://"), strings.HasPrefix(src, "ssh://"):
		return true
	case !isURL(src):
		return false
	}
	u, err := url.Parse(src)
	return err == nil && (strings.HasSuffix(u.Path, ".git") || u.Fragment != "")
}

// download is an ADD URL's file, fetched once per build.
type download struct {
	file     string // in the build's scratch directory
	name     string // the file name ADD gives it: the URL path's last part
	digest   string // sha256:... of its bytes
	size     int64
	modified time.Time // Last-Modified; zero when the server sent none
}

// keyOf names downloads for a step's key: what each holds and how ADD
// writes it.
func keyOf(ds []*download) []string {
	var out []string
	for _, d := range ds {
		out = append(out, fmt.Sprintf("%s %s %d %s", d.name, d.digest, d.size, d.modified.UTC().Format(time.RFC3339)))
	}
	return out
}

// download fetches url into the build's scratch directory (once per build,
// whatever the platforms), checking it against checksum when one is given.
func (b *builder) download(ctx context.Context, src, checksum string) (*download, error) {
	d, err := shared(b, b.downloads, src, func() (*download, error) { return b.fetch(ctx, src) })
	if err != nil {
		return nil, err
	}
	if checksum != "" && checksum != d.digest {
		return nil, fmt.Errorf("%s: checksum mismatch: the download is %s, --checksum says %s", src, d.digest, checksum)
	}
	return d, nil
}

func (b *builder) fetch(ctx context.Context, src string) (*download, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", src, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching %s: %s", src, resp.Status)
	}
	f, err := os.CreateTemp(b.workDir, "url-")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), resp.Body)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", src, err)
	}
	d := &download{file: f.Name(), name: "__unnamed__", digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), size: n}
	if u, err := url.Parse(src); err == nil {
		if base := path.Base(u.Path); base != "." && base != "/" {
			d.name = base
		}
	}
	if lm := resp.Header.Get("Last-Modified"); lm != "" {
		d.modified, _ = http.ParseTime(lm)
	}
	return d, f.Close()
}

// remote adds a downloaded file as ADD does: named by the URL (BuildKit
// sets that name, so a Content-Disposition does not change it), 0600
// unless --chmod, root's unless --chown, dated by Last-Modified, never
// extracted.
func (c *copier) remote(d *download) error {
	target := c.dest
	if c.toDir {
		target = path.Join(c.dest, d.name)
	}
	h := tar.Header{Name: target, Typeflag: tar.TypeReg, Mode: 0o600, Size: d.size, ModTime: d.modified}
	if d.modified.IsZero() {
		h.ModTime = time.Now()
	}
	if c.mode != nil {
		h.Mode = int64(*c.mode)
	}
	if c.ids != nil {
		h.Uid, h.Gid = c.ids.UID, c.ids.GID
	}
	c.entries = append(c.entries, layers.Entry{Header: h, Source: d.file})
	return nil
}
