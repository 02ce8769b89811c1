package registry

import (
	"context"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Options are what every registry operation shares.
type Options struct {
	// Keychain finds credentials; default: docker's config.json and its
	// credential helpers.
	Keychain authn.Keychain
	// Transport carries the HTTP requests; default: ggcr's. Retry wraps it.
	Transport http.RoundTripper
	// CACerts are PEM files of certificate authorities to trust besides
	// the system's (--ca-cert).
	CACerts []string
	// OnProgress hears how many bytes of a push are sent of how many.
	OnProgress func(complete, total int64)
	// Retry bounds the tries of a failed request; zero: DefaultRetry.
	Retry Retry
	// MaxUnpacked bounds the bytes one base image's layers unpack to,
	// together; zero: DefaultMaxUnpacked, negative: no bound.
	MaxUnpacked int64
	// Store is the local store looked in before any registry; nil: none.
	Store *Store
	// MetaDir keeps the manifests and configs of the images a base index
	// names, by digest, so that a later build reads them from disk; "":
	// none.
	MetaDir string
}

func (o Options) remote(ctx context.Context) []remote.Option {
	r := o.Retry.withDefaults()
	opts := []remote.Option{
		remote.WithContext(ctx), remote.WithAuthFromKeychain(o.keychain()),
		remote.WithTransport(o.transport()),
		remote.WithUserAgent("manifold"),
	}
	return append(opts, r.options()...)
}

// keychain is Keychain, or docker's config.json and its helpers.
func (o Options) keychain() authn.Keychain {
	if o.Keychain == nil {
		return authn.DefaultKeychain
	}
	return o.Keychain
}

// transport carries requests as Retry says, over baseTransport.
func (o Options) transport() http.RoundTripper {
	return newRetrying(o.baseTransport(), o.Retry)
}

// ParseReference parses an image reference as Docker does (docker.io and
// library/ implied, :latest by default).
func (o Options) ParseReference(ref string) (name.Reference, error) {
	return name.ParseReference(ref)
}

func (o Options) maxUnpacked() int64 {
	if o.MaxUnpacked == 0 {
		return DefaultMaxUnpacked
	}
	return max(o.MaxUnpacked, 0)
}
