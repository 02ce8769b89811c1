package registry

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// LocalCache keeps build steps on disk: a record per cache key
// (steps/<hex>.json) and the compressed layers they made
// (blobs/sha256/<hex>). It is bounded: past Max bytes of layers, the least
// recently used go first. Builds running at once share it: files are
// written aside and renamed into place, and writers take turns.
type LocalCache struct {
	Dir string
	Max int64 // bytes of layers kept; 0: no bound
}

// DefaultCacheSize is the local cache's bound unless told otherwise.
const DefaultCacheSize = 4 << 30

// Get finds the step with this key. A record whose layer is missing, or
// whose bytes do not match their digest, is removed and reported missing:
// a corrupt entry is rebuilt, never used.
func (c *LocalCache) Get(key string) (*Step, v1.Layer, bool) {
	rec := c.recordPath(key)
	data, err := os.ReadFile(rec)
	if err != nil {
		return nil, nil, false
	}
	var st Step
	if json.Unmarshal(data, &st) != nil {
		os.Remove(rec)
		return nil, nil, false
	}
	now := time.Now()
	os.Chtimes(rec, now, now)
	if st.Layer == nil {
		return &st, nil, true
	}
	blob := c.blobPath(st.Layer.Digest)
	if err := verifyFile(blob, st.Layer.Digest, st.Layer.Size); err != nil {
		os.Remove(rec)
		os.Remove(blob)
		return nil, nil, false
	}
	os.Chtimes(blob, now, now)
	l, err := partial.CompressedToLayer(&fileLayer{path: blob, info: *st.Layer})
	if err != nil {
		return nil, nil, false
	}
	return &st, l, true
}

// Put stores a step and its layer (nil: none), then trims the cache to its
// bound, never removing what it just stored.
func (c *LocalCache) Put(key string, st Step, l v1.Layer) error {
	if err := os.MkdirAll(filepath.Join(c.Dir, "steps"), 0o755); err != nil {
		return err
	}
	unlock, err := lockFile(filepath.Join(c.Dir, ".lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if l != nil {
		info, err := Info(l)
		if err != nil {
			return err
		}
		st.Layer = info
		if err := c.putBlob(l, info); err != nil {
			return err
		}
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := writeAtomic(c.recordPath(key), data); err != nil {
		return err
	}
	if c.Max > 0 {
		_, err = c.trim(c.Max, 1)
	}
	return err
}

func (c *LocalCache) putBlob(l v1.Layer, info *LayerInfo) error {
	blob := c.blobPath(info.Digest)
	if verifyFile(blob, info.Digest, info.Size) == nil {
		return nil
	}
	if err := writeBlob(blob, l, info.Digest, info.Size); err != nil {
		return fmt.Errorf("storing layer %s in the cache: %w", info.Digest, err)
	}
	return nil
}

// writeBlob writes l's compressed bytes to path through a temporary file
// beside it, renamed into place only once their digest and size are want
// and size: a failed or lying read leaves nothing under the blob's name.
func writeBlob(path string, l v1.Layer, want v1.Hash, size int64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	got, n, err := v1.SHA256(io.TeeReader(rc, tmp))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		return err
	case got != want || n != size:
		return fmt.Errorf("%w: read %d bytes with digest %s", ErrIntegrity, n, got)
	}
	return os.Rename(tmp.Name(), path)
}

// Prune removes the least recently used layers until at most keep bytes
// are left (0: all of them), and the records whose layers are gone. It
// returns how many bytes it freed.
func (c *LocalCache) Prune(keep int64) (int64, error) {
	if _, err := os.Stat(c.Dir); errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	unlock, err := lockFile(filepath.Join(c.Dir, ".lock"))
	if err != nil {
		return 0, err
	}
	defer unlock()
	freed, err := c.trim(keep, 0)
	if err != nil {
		return freed, err
	}
	return freed, c.dropOrphans(keep == 0)
}

// Size is the bytes of layers the cache holds.
func (c *LocalCache) Size() (int64, error) {
	blobs, err := c.blobs()
	var n int64
	for _, b := range blobs {
		n += b.size
	}
	return n, err
}

type blobFile struct {
	path string
	size int64
	used time.Time
}

func (c *LocalCache) blobs() ([]blobFile, error) {
	des, err := os.ReadDir(filepath.Join(c.Dir, "blobs", "sha256"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var out []blobFile
	for _, de := range des {
		fi, err := de.Info()
		if err != nil || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		out = append(out, blobFile{filepath.Join(c.Dir, "blobs", "sha256", de.Name()), fi.Size(), fi.ModTime()})
	}
	return out, err
}

// trim removes the least recently used blobs while more than bound bytes
// are kept, sparing the spare most recent ones.
func (c *LocalCache) trim(bound int64, spare int) (int64, error) {
	blobs, err := c.blobs()
	if err != nil {
		return 0, err
	}
	slices.SortFunc(blobs, func(a, b blobFile) int { return a.used.Compare(b.used) })
	var total, freed int64
	for _, b := range blobs {
		total += b.size
	}
	for _, b := range blobs[:max(len(blobs)-spare, 0)] {
		if total <= bound {
			break
		}
		if err := os.Remove(b.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return freed, err
		}
		total -= b.size
		freed += b.size
	}
	return freed, nil
}

// dropOrphans removes the records whose layer is gone (all records with
// all).
func (c *LocalCache) dropOrphans(all bool) error {
	des, err := os.ReadDir(filepath.Join(c.Dir, "steps"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	for _, de := range des {
		p := filepath.Join(c.Dir, "steps", de.Name())
		var st Step
		data, rerr := os.ReadFile(p)
		orphan := rerr != nil || json.Unmarshal(data, &st) != nil
		if !orphan && st.Layer != nil {
			_, serr := os.Stat(c.blobPath(st.Layer.Digest))
			orphan = serr != nil
		}
		if all || orphan {
			os.Remove(p)
		}
	}
	return err
}

func (c *LocalCache) recordPath(key string) string {
	_, hex, _ := strings.Cut(key, ":")
	return filepath.Join(c.Dir, "steps", hex+".json")
}

func (c *LocalCache) blobPath(d v1.Hash) string {
	return filepath.Join(c.Dir, "blobs", d.Algorithm, d.Hex)
}

// verifyFile checks a blob file's size and sha256 digest.
func verifyFile(path string, want v1.Hash, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != size || want.Algorithm != "sha256" || got != want.Hex {
		return fmt.Errorf("%s: %d bytes with digest sha256:%s, want %d bytes with %s", path, n, got, size, want)
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// lockFile takes an exclusive lock held across processes.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// fileLayer is a verified compressed layer in a file.
type fileLayer struct {
	path string
	info LayerInfo
}

func (f *fileLayer) Digest() (v1.Hash, error)            { return f.info.Digest, nil }
func (f *fileLayer) DiffID() (v1.Hash, error)            { return f.info.DiffID, nil }
func (f *fileLayer) Size() (int64, error)                { return f.info.Size, nil }
func (f *fileLayer) MediaType() (types.MediaType, error) { return f.info.MediaType, nil }
func (f *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(f.path) }
