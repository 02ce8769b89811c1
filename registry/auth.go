package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// ErrUnauthorized is a registry that refused the credentials it was given,
// or asked for some and got none.
var ErrUnauthorized = errors.New("authentication required")

// Login checks user and password against the registry at host and, when
// it takes them, stores them as docker login does: in Docker's config.json
// ($DOCKER_CONFIG, else ~/.docker; mode 0600, other entries kept) or in the
// credential store or helper that file names for host.
func Login(ctx context.Context, host, user, password string, o Options) error {
	reg, err := name.NewRegistry(host)
	if err != nil {
		return err
	}
	auth := &authn.Basic{Username: user, Password: password}
	t, err := transport.NewWithContext(ctx, reg, auth, o.transport(), []string{reg.Scope(transport.PullScope)})
	if err != nil {
		return loginError(host, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s://%s/v2/", reg.Scheme(), reg.RegistryStr()), nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: t}).Do(req)
	if err != nil {
		return loginError(host, err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("logging in to %s: %w: the registry refused the username or password", host, ErrUnauthorized)
	}
	cf, err := loadConfig()
	if err != nil {
		return err
	}
	if err := cf.GetCredentialsStore(host).Store(types.AuthConfig{ServerAddress: host, Username: user, Password: password}); err != nil {
		return fmt.Errorf("storing the credentials for %s: %w", host, err)
	}
	return cf.Save()
}

// loadConfig reads Docker's config.json from $DOCKER_CONFIG, else
// ~/.docker, as go-containerregistry's keychain does (read now, not once).
func loadConfig() (*configfile.ConfigFile, error) {
	dir := os.Getenv("DOCKER_CONFIG")
	if dir == "" {
		dir = config.Dir()
	}
	cf, err := config.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	return cf, nil
}

func loginError(host string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		return fmt.Errorf("logging in to %s: %w: the registry refused the username or password", host, ErrUnauthorized)
	}
	return fmt.Errorf("logging in to %s: %w", host, err)
}

// Logout removes the credentials stored for host, as docker logout does.
func Logout(host string) error {
	cf, err := loadConfig()
	if err != nil {
		return err
	}
	if _, ok := cf.GetAuthConfigs()[host]; !ok && cf.CredentialHelpers[host] == "" && cf.CredentialsStore == "" {
		return fmt.Errorf("not logged in to %s", host)
	}
	if err := cf.GetCredentialsStore(host).Erase(host); err != nil {
		return fmt.Errorf("removing the credentials for %s: %w", host, err)
	}
	return cf.Save()
}

// LoginHint adds how to log in to an error that a registry refused for
// want of credentials, naming the registry.
func LoginHint(err error) error {
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized && te.StatusCode != http.StatusForbidden || te.Request == nil {
		return err
	}
	host := te.Request.URL.Host
	return fmt.Errorf("%w\n%s wants credentials: run 'manifold login %s'", err, host, host)
}

// baseTransport is remote's default transport, trusting CACerts besides
// the system's certificates (and $SSL_CERT_FILE, which Go reads itself).
func (o Options) baseTransport() http.RoundTripper {
	if o.Transport != nil || len(o.CACerts) == 0 {
		return o.Transport
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, f := range o.CACerts {
		if pem, err := os.ReadFile(f); err == nil {
			pool.AppendCertsFromPEM(pem)
		}
	}
	t := remote.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return t
}
