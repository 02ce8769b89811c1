# Sourced by the scripts: puts the Go that setup found or fetched on PATH.
PATH=/usr/local/lib/manifold-go/current/bin:/usr/local/go/bin:$PATH
export PATH
