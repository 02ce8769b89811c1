// Package registry resolves image references and platforms, reads images
// lazily (manifests and configs first, layer blobs only when asked for),
// and writes results: to a registry (blobs that exist or can be mounted are
// never uploaded; images first, the index next, tags last), to an OCI image
// layout or tarball, or to manifold's local store.
package registry
