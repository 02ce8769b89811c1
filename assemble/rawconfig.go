package assemble

import (
	"encoding/json"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/manifold-build/manifold/registry"
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
	return registry.PatchConfig(img, func(doc map[string]json.RawMessage) error {
		var conf map[string]json.RawMessage
		if err := json.Unmarshal(doc["config"], &conf); err != nil {
			return err
		}
		var hc map[string]json.RawMessage
		if err := json.Unmarshal(conf["Healthcheck"], &hc); err != nil {
			return err
		}
		var err error
		if hc["StartInterval"], err = json.Marshal(d); err != nil {
			return err
		}
		if conf["Healthcheck"], err = json.Marshal(hc); err != nil {
			return err
		}
		doc["config"], err = json.Marshal(conf)
		return err
	})
}
