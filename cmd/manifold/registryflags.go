package main

import (
	"github.com/spf13/pflag"

	"github.com/manifold-build/manifold/registry"
)

// registryFlags are the flags of every command that reads or writes
// images: where the local store is and how failed requests are retried.
type registryFlags struct {
	store string
	retry registry.Retry
}

func (r *registryFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&r.store, "store", registry.DefaultStoreDir(), "the local image store, looked in before any registry (env MANIFOLD_STORE)")
	fs.IntVar(&r.retry.Attempts, "retry", registry.DefaultRetry.Attempts, "tries of a registry request that fails (5xx, 429, reset, timeout, cut-off body)")
	fs.DurationVar(&r.retry.Delay, "retry-delay", registry.DefaultRetry.Delay, "wait before the second try, doubled for each next one")
	fs.DurationVar(&r.retry.MaxDelay, "retry-max-delay", registry.DefaultRetry.MaxDelay, "the longest single wait, a registry's Retry-After included")
}

func (r *registryFlags) options() registry.Options {
	return registry.Options{Store: &registry.Store{Dir: r.store}, Retry: r.retry}
}
