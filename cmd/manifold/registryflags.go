package main

import (
	"github.com/spf13/pflag"

	"github.com/manifold-build/manifold/registry"
)

// registryFlags are the flags of every command that reads or writes
// images: where the local store is and how failed requests are retried.
type registryFlags struct {
	store       string
	retry       registry.Retry
	maxUnpacked string
	caCerts     []string
	noStore     bool // look in registries only
}

func (r *registryFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&r.store, "store", registry.DefaultStoreDir(), "the local image store, looked in before any registry (env MANIFOLD_STORE)")
	fs.IntVar(&r.retry.Attempts, "retry", registry.DefaultRetry.Attempts, "tries of a registry request that fails (5xx, 429, reset, timeout, cut-off body)")
	fs.DurationVar(&r.retry.Delay, "retry-delay", registry.DefaultRetry.Delay, "wait before the second try, doubled for each next one")
	fs.StringArrayVar(&r.caCerts, "ca-cert", nil, "a PEM file of a certificate authority to trust for registries, besides the system's and $SSL_CERT_FILE (repeatable)")
	fs.StringVar(&r.maxUnpacked, "max-unpacked", "64GiB", "the most one base image's layers may unpack to (0: no bound)")
	fs.DurationVar(&r.retry.MaxDelay, "retry-max-delay", registry.DefaultRetry.MaxDelay, "the longest single wait, a registry's Retry-After included")
}

func (r *registryFlags) options() (registry.Options, error) {
	o := registry.Options{Store: &registry.Store{Dir: r.store}, Retry: r.retry, CACerts: r.caCerts}
	if r.noStore {
		o.Store = nil
	}
	if r.retry.Attempts < 1 || r.retry.Delay <= 0 || r.retry.MaxDelay <= 0 {
		return o, usagef("--retry must be at least 1, --retry-delay and --retry-max-delay more than 0")
	}
	n, err := parseSize(r.maxUnpacked)
	if err != nil {
		return o, usagef("--max-unpacked: %v", err)
	}
	o.MaxUnpacked = n
	if n == 0 {
		o.MaxUnpacked = -1
	}
	return o, nil
}
