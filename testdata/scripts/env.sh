# Sourced by the scripts: puts the Go that setup found or fetched on PATH.
PATH=/usr/local/lib/manifold-go/current/bin:$PATH:/usr/local/go/bin
export PATH
