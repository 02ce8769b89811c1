package registry

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// DefaultMaxUnpacked bounds what one base image may unpack to: generous
// (the largest public images are a few tens of GiB), yet a gzip bomb stops.
const DefaultMaxUnpacked = 64 << 30

// ErrIntegrity is a layer whose bytes are not what its image says.
var ErrIntegrity = errors.New("layer fails its integrity check")

// verified wraps an image read from elsewhere so that every read of one of
// its layers is checked: the compressed bytes against the layer's digest
// and size, the compression stream to its end (gzip's trailer and CRC, zstd's
// checksum), the uncompressed bytes against the config's diff_id, and their
// amount against the image's budget. Errors name the image, the platform,
// the layer's number and its digest.
type verified struct {
	v1.Image
	name string // the image and platform, for errors
	max  int64  // bytes the layers may unpack to, together; 0: no bound

	mu    sync.Mutex
	read  map[int]int64 // the most read of each layer's uncompressed stream
	total int64         // their sum
}

func verify(img v1.Image, name string, max int64) v1.Image {
	return &verified{Image: img, name: name, max: max, read: map[int]int64{}}
}

func (v *verified) Layers() ([]v1.Layer, error) {
	ls, err := v.Image.Layers()
	if err != nil {
		return nil, err
	}
	cf, err := v.Image.ConfigFile()
	if err != nil {
		return nil, err
	}
	if len(cf.RootFS.DiffIDs) != len(ls) {
		return nil, fmt.Errorf("%s: %w: %d layers, %d diff_ids in its config", v.name, ErrIntegrity, len(ls), len(cf.RootFS.DiffIDs))
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = v.layer(i, l, cf.RootFS.DiffIDs[i])
	}
	return out, nil
}

func (v *verified) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	if l, err := v.find(h, v1.Layer.Digest); l != nil || err != nil {
		return l, err
	}
	return v.Image.LayerByDigest(h) // the config blob
}

func (v *verified) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	if l, err := v.find(h, v1.Layer.DiffID); l != nil || err != nil {
		return l, err
	}
	return nil, fmt.Errorf("%s has no layer with diff_id %s", v.name, h)
}

func (v *verified) find(h v1.Hash, id func(v1.Layer) (v1.Hash, error)) (v1.Layer, error) {
	ls, err := v.Layers()
	if err != nil {
		return nil, err
	}
	for _, l := range ls {
		if got, err := id(l); err == nil && got == h {
			return l, nil
		}
	}
	return nil, nil
}

// layer wraps layer i, keeping a mountable layer mountable.
func (v *verified) layer(i int, l v1.Layer, diffID v1.Hash) v1.Layer {
	if ml, ok := l.(*remote.MountableLayer); ok {
		return &remote.MountableLayer{Layer: &checkedLayer{Layer: ml.Layer, img: v, i: i, diffID: diffID}, Reference: ml.Reference}
	}
	return &checkedLayer{Layer: l, img: v, i: i, diffID: diffID}
}

// count notes that n bytes of layer i's uncompressed stream were read.
func (v *verified) count(i int, n int64) error {
	if v.max <= 0 {
		return nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if n > v.read[i] {
		v.total += n - v.read[i]
		v.read[i] = n
	}
	if v.total > v.max {
		return fmt.Errorf("the image's layers unpack to more than %d MiB (--max-unpacked to allow more)", v.max>>20)
	}
	return nil
}

type checkedLayer struct {
	v1.Layer
	img    *verified
	i      int
	diffID v1.Hash // what the image's config says
}

// DiffID is what the config says the layer unpacks to, which reading it
// checks (some v1.Layers would hash their own bytes instead).
func (l *checkedLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }

// Descriptor keeps what the manifest says of the layer (URLs,
// annotations) when an image is built on it.
func (l *checkedLayer) Descriptor() (*v1.Descriptor, error) { return partial.Descriptor(l.Layer) }

func (l *checkedLayer) where() string {
	d, _ := l.Layer.Digest()
	return fmt.Sprintf("%s, layer %d (%s)", l.img.name, l.i+1, d)
}

func (l *checkedLayer) Compressed() (io.ReadCloser, error) {
	want, err := l.Layer.Digest()
	if err != nil {
		return nil, err
	}
	size, err := l.Layer.Size()
	if err != nil {
		return nil, err
	}
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.where(), err)
	}
	return &digestReader{r: rc, closer: rc, h: sha256.New(), want: want, size: size, what: "compressed", where: l.where}, nil
}

func (l *checkedLayer) Uncompressed() (io.ReadCloser, error) {
	c, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	br := bufio.NewReader(c)
	magic, _ := br.Peek(4)
	var r io.Reader = br
	var closeDec func()
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("%s: %w: %v", l.where(), ErrIntegrity, err)
		}
		r = zr
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			c.Close()
			return nil, err
		}
		r, closeDec = zr, zr.Close
	}
	d := &digestReader{r: r, closer: c, h: sha256.New(), want: l.diffID, size: -1, what: "uncompressed", where: l.where, onClose: closeDec}
	d.count = func(n int64) error {
		if err := l.img.count(l.i, n); err != nil {
			return fmt.Errorf("%s: %w", l.where(), err)
		}
		return nil
	}
	return d, nil
}

// layerError is an error that already names its layer.
type layerError struct{ error }

func (e *layerError) Unwrap() error { return e.error }

// digestReader checks, at the end of what it reads, that the bytes had the
// wanted digest (and size, when known).
type digestReader struct {
	r       io.Reader
	closer  io.Closer
	h       hash.Hash
	want    v1.Hash
	size    int64
	n       int64
	what    string
	where   func() string
	count   func(int64) error
	onClose func()
	err     error
}

func (d *digestReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.r.Read(p)
	d.h.Write(p[:n])
	d.n += int64(n)
	if d.count != nil {
		if cerr := d.count(d.n); cerr != nil {
			d.err = &layerError{cerr}
			return n, d.err
		}
	}
	switch {
	case err == io.EOF:
		got := hex.EncodeToString(d.h.Sum(nil))
		if d.size >= 0 && d.n != d.size {
			err = &layerError{fmt.Errorf("%s: %w: %d %s bytes, the manifest says %d", d.where(), ErrIntegrity, d.n, d.what, d.size)}
		} else if got != d.want.Hex {
			err = &layerError{fmt.Errorf("%s: %w: %s digest sha256:%s, not %s", d.where(), ErrIntegrity, d.what, got, d.want)}
		}
	case err == nil, errors.As(err, new(*layerError)):
	case d.what == "uncompressed":
		err = &layerError{fmt.Errorf("%s: %w: %v", d.where(), ErrIntegrity, err)} // gzip: invalid checksum, ...
	default:
		err = &layerError{fmt.Errorf("%s: %w", d.where(), err)}
	}
	if err != nil {
		d.err = err
	}
	return n, err
}

func (d *digestReader) Close() error {
	if d.onClose != nil {
		d.onClose()
	}
	return d.closer.Close()
}
