package assemble

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// go-containerregistry's config type has no field for a HEALTHCHECK's
// --start-interval (Docker's Healthcheck.StartInterval): a base's value is
// read from its config's JSON, and a new image's config JSON gets it
// written in.

// startIntervalOf reads Healthcheck.StartInterval from a raw config.
func startIntervalOf(raw []byte) time.Duration {
	var doc struct {
		Config struct {
			Healthcheck *struct{ StartInterval time.Duration } `json:"Healthcheck"`
		} `json:"config"`
	}
	if json.Unmarshal(raw, &doc) != nil || doc.Config.Healthcheck == nil {
		return 0
	}
	return doc.Config.Healthcheck.StartInterval
}

// withStartInterval is img with its config's healthcheck given
// StartInterval d; img is returned as it is when it has no healthcheck or
// d is zero.
func withStartInterval(img v1.Image, d time.Duration) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil || d == 0 || cf.Config.Healthcheck == nil {
		return img, err
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	var conf map[string]json.RawMessage
	if err := json.Unmarshal(doc["config"], &conf); err != nil {
		return nil, err
	}
	var hc map[string]json.RawMessage
	if err := json.Unmarshal(conf["Healthcheck"], &hc); err != nil {
		return nil, err
	}
	if hc["StartInterval"], err = json.Marshal(d); err != nil {
		return nil, err
	}
	if conf["Healthcheck"], err = json.Marshal(hc); err != nil {
		return nil, err
	}
	if doc["config"], err = json.Marshal(conf); err != nil {
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
	sum := sha256.Sum256(raw)
	m.Config.Digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	m.Config.Size = int64(len(raw))
	rawManifest, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &patchedConfig{Image: img, config: raw, manifest: m, rawManifest: rawManifest}, nil
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
func (p *patchedConfig) Digest() (v1.Hash, error) {
	sum := sha256.Sum256(p.rawManifest)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, nil
}
