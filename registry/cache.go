package registry

import (
	"encoding/json"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Step is what a cached build step produced: the layer it added (nil when
// it added none) and its history entry's created_by. Steps are found by
// their cache key, a digest that assemble computes from everything the
// step's result depends on.
type Step struct {
	Layer     *LayerInfo `json:"layer,omitempty"`
	CreatedBy string     `json:"createdBy"`
	Created   time.Time  `json:"created"` // when it ran: its history entry's time
}

// LayerInfo is what an image needs of a layer it does not hold yet: its
// digest, size and media type for the manifest, its diff ID for the config.
type LayerInfo struct {
	Digest    v1.Hash         `json:"digest"`
	DiffID    v1.Hash         `json:"diffID"`
	Size      int64           `json:"size"`
	MediaType types.MediaType `json:"mediaType"`
}

// Info describes a layer for the cache.
func Info(l v1.Layer) (*LayerInfo, error) {
	var li LayerInfo
	var err error
	if li.Digest, err = l.Digest(); err != nil {
		return nil, err
	}
	if li.DiffID, err = l.DiffID(); err != nil {
		return nil, err
	}
	if li.Size, err = l.Size(); err != nil {
		return nil, err
	}
	if li.MediaType, err = l.MediaType(); err != nil {
		return nil, err
	}
	return &li, nil
}

// cacheConfig is the config blob of a registry cache manifest: every step
// it holds, by key. The manifest's layers are the steps' layers, in the
// order of first use.
type cacheConfig struct {
	Version int             `json:"version"`
	Steps   map[string]Step `json:"steps"`
}

// The media types of manifold's registry cache: a plain OCI image manifest
// with its own artifact type and config type, whose layers are ordinary
// image layers.
const (
	CacheArtifactType types.MediaType = "application/vnd.manifold.cache.v1"
	CacheConfigType   types.MediaType = "application/vnd.manifold.cache.config.v1+json"
)

func parseCacheConfig(data []byte) (*cacheConfig, error) {
	var c cacheConfig
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("reading cache config: %w", err)
	}
	if c.Version != 1 {
		return nil, fmt.Errorf("cache config version %d, want 1", c.Version)
	}
	return &c, nil
}
