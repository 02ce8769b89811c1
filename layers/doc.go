// Package layers turns files into container image layers and back: it writes
// deterministic tar streams (sorted entries, clamped timestamps, a fixed
// compression header) compressed with gzip or zstd, unpacks layers into a
// root-confined directory (whiteouts, opaque directories, hardlinks, xattrs),
// and captures the changes of a step from an overlay upper directory.
//
// It knows nothing of registries, Dockerfiles or sandboxes.
package layers
