package assemble

import (
	"context"
	"fmt"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/manifold-build/manifold/emulate"
	"github.com/manifold-build/manifold/emulate/platform"
)

// defaultPath is the PATH BuildKit gives a stage whose base sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// state is a stage being built for one platform: its base, the config as
// the steps so far left it, and the layers and history they added.
type state struct {
	b        *builder
	stage    *Stage
	platform platform.Platform // the platform the stage runs on
	target   platform.Platform // the platform the build is for
	progress ProgressStep      // the step being built, for its output

	base      v1.Image
	baseDesc  *v1.Descriptor  // the base's index entry (or its own descriptor)
	baseName  string          // the base's reference, for the OCI base annotations
	mediaType types.MediaType // the manifest type new images take
	cfg       *v1.ConfigFile
	// startInterval is the healthcheck's --start-interval, which cfg's
	// type has no field for (rawconfig.go).
	startInterval time.Duration
	layers        []v1.Layer // base layers then added ones
	nBase         int        // how many of layers the base had
	history       []v1.History
	key           string    // the cache key of the stage's files so far
	clock         time.Time // when the newest layer step ran, here or in a cache (zero: none yet)
	args          []string  // ARGs declared in this stage, K=V
	cmdSet        bool      // CMD was set in this stage
	dirs          []string  // unpacked filesystem: one directory per layer group, bottom first
	dirLayers     int       // how many of layers dirs covers

	userDB       *emulate.Users // /etc/passwd and /etc/group, when read
	userDBLayers int            // len(layers) when userDB was read
}

func newScratchState(b *builder, st *Stage, plat, target platform.Platform) *state {
	cfg := &v1.ConfigFile{
		OS: plat.OS, Architecture: plat.Architecture, Variant: plat.TargetVariant(),
		RootFS: v1.RootFS{Type: "layers"},
		Config: v1.Config{Env: []string{"PATH=" + defaultPath}, WorkingDir: "/"}, // as BuildKit writes a scratch stage's
	}
	mt, ct := types.OCIManifestSchema1, types.OCIConfigJSON
	if b.o.DockerMediaTypes {
		mt, ct = types.DockerManifestSchema2, types.DockerConfigJSON
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, mt), ct)
	s := &state{b: b, stage: st, platform: plat, target: target, base: img, mediaType: mt, cfg: cfg}
	s.key = key("", "scratch", plat.String(), s.layerOptions().MediaType, b.o.Compression, b.o.Epoch)
	return s
}

func newImageState(b *builder, st *Stage, plat, target platform.Platform, img v1.Image, desc *v1.Descriptor, name string) (*state, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, err
	}
	ls, err := img.Layers()
	if err != nil {
		return nil, err
	}
	cfg := cf.DeepCopy()
	if len(cfg.Config.Env) == 0 {
		cfg.Config.Env = []string{"PATH=" + defaultPath}
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	s := &state{b: b, stage: st, platform: plat, target: target, base: img, baseDesc: desc, baseName: name,
		mediaType: mt, cfg: cfg, startInterval: startIntervalOf(raw), layers: ls, nBase: len(ls)}
	s.key = key("", "image", desc.Digest.String(), plat.String(), s.layerOptions().MediaType, b.o.Compression, b.o.Epoch)
	return s, nil
}

// child starts stage st on top of this finished stage.
func (s *state) child(st *Stage, target platform.Platform) *state {
	c := *s
	c.stage, c.target = st, target
	c.cfg = s.cfg.DeepCopy()
	c.layers = append([]v1.Layer(nil), s.layers...)
	c.history = append([]v1.History(nil), s.history...)
	c.dirs = append([]string(nil), s.dirs...)
	c.args, c.cmdSet = nil, false
	return &c
}

// env is what instructions expand in: the stage's ARGs, overridden by ENV.
func (s *state) env() []string {
	env := append([]string(nil), s.args...)
	for _, kv := range s.cfg.Config.Env {
		k, v, _ := strings.Cut(kv, "=")
		env = setEnv(env, k, v)
	}
	return env
}

func (s *state) expand(word string) (string, error) {
	out, _, err := s.b.df.expand(word, s.env())
	return out, err
}

// created is the time history entries and the image get: SOURCE_DATE_EPOCH
// when set, else the time the stage's newest layer was made (a cached
// layer's from its cache, as BuildKit keeps it, so that a rebuild from the
// cache gives the same image), else now.
func (s *state) created() time.Time {
	switch {
	case s.b.o.Epoch != nil:
		return s.b.o.Epoch.UTC()
	case !s.clock.IsZero():
		return s.clock
	}
	return s.b.now()
}

// record adds a history entry for in, made at t; empty says it added no
// layer. A zero t (a step that only edits the config) is filled in when the
// image is made.
func (s *state) record(in *Instruction, createdBy string, empty bool, t time.Time) {
	if createdBy == "" {
		createdBy = in.String()
	}
	s.history = append(s.history, v1.History{
		Created:    v1.Time{Time: t},
		CreatedBy:  createdBy,
		Comment:    "buildkit.dockerfile.v0",
		EmptyLayer: empty,
	})
}

// addLayer appends a layer made by in at t.
func (s *state) addLayer(in *Instruction, l v1.Layer, createdBy string, t time.Time) {
	s.layers = append(s.layers, l)
	s.record(in, createdBy, false, t)
}

// step runs one instruction.
func (s *state) step(ctx context.Context, in *Instruction) error {
	switch in.Cmd {
	case "arg":
		return s.arg(in)
	case "copy", "add":
		return s.copy(ctx, in)
	case "run":
		return s.run(ctx, in)
	case "workdir":
		return s.workdir(ctx, in)
	}
	return s.metadata(in)
}

func (s *state) arg(in *Instruction) error {
	meta := s.b.metaEnv(s.target)
	for _, a := range in.Args {
		k, def, hasDef := strings.Cut(a, "=")
		if k == "" {
			return fmt.Errorf("ARG needs a name")
		}
		v, ok := s.b.o.BuildArgs[k]
		switch {
		case ok:
		case hasDef:
			var err error
			if v, err = s.expand(def); err != nil {
				return err
			}
		default:
			if v, ok = lookupEnv(meta, k); !ok {
				continue // declared without a value
			}
		}
		s.args = setEnv(s.args, k, v)
	}
	return nil
}

// image is the stage's result as an image.
func (s *state) image() (v1.Image, error) {
	var adds []mutate.Addendum
	for _, l := range s.layers[s.nBase:] {
		adds = append(adds, mutate.Addendum{Layer: l})
	}
	img, err := mutate.Append(s.base, adds...)
	if err != nil {
		return nil, err
	}
	cfg := s.cfg.DeepCopy()
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = nil
	for _, l := range s.layers {
		d, err := l.DiffID()
		if err != nil {
			return nil, err
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, d)
	}
	for _, h := range s.history {
		if h.Created.IsZero() {
			h.Created = v1.Time{Time: s.created()}
		}
		cfg.History = append(cfg.History, h)
	}
	cfg.Created = v1.Time{Time: s.created()}
	if s.isTarget() {
		if cfg.Config.Labels == nil && len(s.b.o.Labels) > 0 {
			cfg.Config.Labels = map[string]string{}
		}
		for k, v := range s.b.o.Labels {
			cfg.Config.Labels[k] = v
		}
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, err
	}
	return withStartInterval(s.annotate(img), s.startInterval)
}

// annotate names the base in an OCI manifest's annotations, as ko and the
// image spec do: which image, and which manifest of it this one builds on.
// Docker's manifests have no annotations.
func (s *state) annotate(img v1.Image) v1.Image {
	if s.mediaType != types.OCIManifestSchema1 || s.baseDesc == nil || s.baseName == "" {
		return img
	}
	return mutate.Annotations(img, map[string]string{
		"org.opencontainers.image.base.name":   s.baseName,
		"org.opencontainers.image.base.digest": s.baseDesc.Digest.String(),
	}).(v1.Image)
}

// isTarget tells whether the stage is the one the build is for (--target,
// else the last): its image gets the --label labels.
func (s *state) isTarget() bool {
	st, _ := s.b.targetStage()
	return s.stage == st
}

// descPlatform is the platform the index entry of this image carries: the
// base index's own entry where there was one, else the config's.
func (s *state) descPlatform() v1.Platform {
	if s.baseDesc != nil && s.baseDesc.Platform != nil {
		return *s.baseDesc.Platform
	}
	return platform.FromOCI(v1.Platform{OS: s.cfg.OS, Architecture: s.cfg.Architecture, Variant: s.cfg.Variant}).OCI()
}
