package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// PatchConfig is img with its config's JSON edited by edit, which gets the
// top-level fields: for what go-containerregistry's config type has no
// field for (it would drop them). The manifest names the new config.
func PatchConfig(img v1.Image, edit func(doc map[string]json.RawMessage) error) (v1.Image, error) {
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	if err := edit(doc); err != nil {
		return nil, err
	}
	if raw, err = json.Marshal(doc); err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	m = m.DeepCopy()
	m.Config.Digest, m.Config.Size = sha256Of(raw), int64(len(raw))
	rawManifest, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &patchedConfig{Image: img, config: raw, manifest: m, rawManifest: rawManifest}, nil
}

func sha256Of(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// patchedConfig is an image whose config JSON was rewritten.
type patchedConfig struct {
	v1.Image
	config, rawManifest []byte
	manifest            *v1.Manifest
}

func (p *patchedConfig) RawConfigFile() ([]byte, error) { return p.config, nil }
func (p *patchedConfig) ConfigName() (v1.Hash, error)   { return p.manifest.Config.Digest, nil }
func (p *patchedConfig) ConfigFile() (*v1.ConfigFile, error) {
	return v1.ParseConfigFile(bytes.NewReader(p.config))
}
func (p *patchedConfig) Manifest() (*v1.Manifest, error) { return p.manifest.DeepCopy(), nil }
func (p *patchedConfig) RawManifest() ([]byte, error)    { return p.rawManifest, nil }
func (p *patchedConfig) Size() (int64, error)            { return int64(len(p.rawManifest)), nil }
func (p *patchedConfig) Digest() (v1.Hash, error)        { return sha256Of(p.rawManifest), nil }
