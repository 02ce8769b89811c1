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
	// Transport carries the HTTP requests; default: ggcr's, with retries.
	Transport http.RoundTripper
	// Store is the local store looked in before any registry; nil: none.
	Store *Store
}

func (o Options) remote(ctx context.Context) []remote.Option {
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc)}
	if o.Transport != nil {
		opts = append(opts, remote.WithTransport(o.Transport))
	}
	return opts
}

// ParseReference parses an image reference as Docker does (docker.io and
// library/ implied, :latest by default).
func (o Options) ParseReference(ref string) (name.Reference, error) {
	return name.ParseReference(ref)
}
