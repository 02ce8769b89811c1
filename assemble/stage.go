package assemble

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/manifold-build/manifold/emulate/platform"
)

// stage builds a stage once for all the platforms that need the same
// result: a stage whose outcome does not depend on the target platform is
// built once per build.
func (b *builder) stage(ctx context.Context, st *Stage, target platform.Platform) (*state, error) {
	key, _, err := b.stageKey(st, target)
	if err != nil {
		return nil, err
	}
	return shared(b, b.stages, key, func() (*state, error) { return b.buildStage(ctx, st, target) })
}

// stageKey names a stage's result: the stage, the platform it runs on and,
// when its outcome depends on it (dependent), the target platform. Stages
// refer only to earlier ones (stageRef), so the recursion ends.
func (b *builder) stageKey(st *Stage, target platform.Platform) (key string, dependent bool, err error) {
	plat, dependent, err := b.stagePlatform(st, target)
	if err != nil {
		return "", false, err
	}
	dependent = dependent || usesTargetArgs(st)
	for _, dep := range b.stageDeps(st) {
		_, d, err := b.stageKey(dep, target)
		if err != nil {
			return "", false, err
		}
		dependent = dependent || d
	}
	key = fmt.Sprintf("%d@%s", st.Index, plat)
	if dependent {
		key += "/target=" + target.String()
	}
	return key, dependent, nil
}

// stagePlatform is the platform a stage runs on, and whether it was chosen by
// the target platform.
func (b *builder) stagePlatform(st *Stage, target platform.Platform) (platform.Platform, bool, error) {
	flag, ok := st.From.Flags["platform"]
	if !ok {
		return target, true, nil
	}
	s, used, err := b.df.expand(flag, b.metaEnv(target))
	if err != nil {
		return platform.Platform{}, false, b.df.errorf(st.From, "%v", err)
	}
	p, err := platform.Parse(s)
	if err != nil {
		return platform.Platform{}, false, b.df.errorf(st.From, "%v", err)
	}
	return p, usesTarget(used), nil
}

func usesTarget(names map[string]struct{}) bool {
	for n := range names {
		if strings.HasPrefix(n, "TARGET") {
			return true
		}
	}
	return false
}

// usesTargetArgs tells whether a stage declares a TARGET* build argument.
func usesTargetArgs(st *Stage) bool {
	for _, in := range st.Steps {
		if in.Cmd != "arg" {
			continue
		}
		for _, a := range in.Args {
			k, _, _ := strings.Cut(a, "=")
			if strings.HasPrefix(k, "TARGET") {
				return true
			}
		}
	}
	return false
}

// stageDeps lists the earlier stages a stage builds on or copies from.
func (b *builder) stageDeps(st *Stage) []*Stage {
	var deps []*Stage
	if d := b.df.stageRef(st.From.Args[0], st.Index); d != nil {
		deps = append(deps, d)
	}
	for _, in := range st.Steps {
		if from, ok := in.Flags["from"]; ok && in.Cmd == "copy" {
			if d := b.df.stageRef(from, st.Index); d != nil {
				deps = append(deps, d)
			}
		}
	}
	return deps
}

// stageRef finds the stage that name (an AS name or an index) means when used
// in stage before; nil means name is an image.
func (df *Dockerfile) stageRef(name string, before int) *Stage {
	for _, st := range df.Stages[:before] {
		if st.Name != "" && st.Name == strings.ToLower(name) || fmt.Sprint(st.Index) == name {
			return st
		}
	}
	return nil
}

// checkStageRefs rejects COPY --from that names a later stage or itself.
func (b *builder) checkStageRefs() error {
	for _, st := range b.df.Stages {
		for _, in := range st.Steps {
			from, ok := in.Flags["from"]
			if !ok || b.df.stageRef(from, st.Index) != nil {
				continue
			}
			if later := b.df.stageRef(from, len(b.df.Stages)); later != nil {
				return b.df.errorf(in, "stage %q is not defined before this stage", from)
			}
		}
	}
	return nil
}

func (b *builder) buildStage(ctx context.Context, st *Stage, target platform.Platform) (*state, error) {
	plat, _, err := b.stagePlatform(st, target)
	if err != nil {
		return nil, err
	}
	meta := b.metaEnv(target)
	ref, _, err := b.df.expand(st.From.Args[0], meta)
	if err != nil {
		return nil, b.df.errorf(st.From, "base image name %q: %v", st.From.Args[0], err)
	}
	if ref == "" {
		return nil, b.df.errorf(st.From, "base image name %q expands to nothing", st.From.Args[0])
	}
	s, err := b.base(ctx, st, ref, plat, target)
	if err != nil {
		return nil, b.located(st.From, plat, err)
	}
	// The ONBUILD triggers of the base, an image or an earlier stage, run
	// first in the stage built on it, and are not inherited: BuildKit
	// v0.34.2 does both.
	steps, err := b.triggers(s, st)
	if err != nil {
		return nil, err
	}
	steps = append(steps, st.Steps...)
	b.startStep(s, 1, len(steps)+1, "FROM "+ref).Done(nil)
	for i, in := range steps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s.progress = b.startStep(s, i+2, len(steps)+1, in.String())
		err := s.step(ctx, in)
		if err != nil {
			err = b.located(in, plat, err)
		}
		s.progress.Done(err)
		s.progress = nil
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

// located gives err the place it happened, unless it already has one (an
// error of a stage this one builds on).
func (b *builder) located(in *Instruction, plat platform.Platform, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{File: b.df.Name, Line: in.Line, Step: in.String(), Platform: plat.String(), Err: err}
}

func (b *builder) base(ctx context.Context, st *Stage, ref string, plat, target platform.Platform) (*state, error) {
	if strings.EqualFold(ref, "scratch") {
		return newScratchState(b, st, plat, target), nil
	}
	if parent := b.df.stageRef(ref, st.Index); parent != nil {
		ps, err := b.stage(ctx, parent, target)
		if err != nil {
			return nil, err
		}
		return ps.child(st, target), nil
	}
	src, err := b.source(ctx, ref)
	if err != nil {
		return nil, err
	}
	img, desc, err := src.ForPlatform(plat)
	if err != nil {
		return nil, err
	}
	if t, _ := b.targetStage(); t == st {
		b.mu.Lock()
		b.baseSrc = src
		b.mu.Unlock()
	}
	name := src.Name
	if strings.HasPrefix(name, "oci-layout://") {
		name = "" // a path on this machine names nothing for others
	}
	return newImageState(b, st, plat, target, img, desc, name)
}

// triggers turns the ONBUILD triggers a base image recorded into steps that
// run first, as Docker does, and clears them from the new image.
func (b *builder) triggers(s *state, st *Stage) ([]*Instruction, error) {
	var steps []*Instruction
	for _, t := range s.cfg.Config.OnBuild {
		in, err := parseTrigger(b.df.Name, st.From.Line, t)
		if err != nil {
			return nil, err
		}
		steps = append(steps, in)
	}
	s.cfg.Config.OnBuild = nil
	return steps, nil
}

// metaEnv is the environment FROM lines expand in: the automatic platform
// arguments and the ARGs before the first FROM.
func (b *builder) metaEnv(target platform.Platform) []string {
	env := platformArgs(target)
	for _, in := range b.df.MetaArgs {
		for _, a := range in.Args {
			k, def, hasDef := strings.Cut(a, "=")
			if v, ok := b.o.BuildArgs[k]; ok {
				env = setEnv(env, k, v)
			} else if hasDef {
				v, _, err := b.df.expand(def, env)
				if err == nil {
					env = setEnv(env, k, v)
				}
			}
		}
	}
	return env
}

// platformArgs are BuildKit's automatic TARGET* and BUILD* arguments.
func platformArgs(target platform.Platform) []string {
	build := platform.Host()
	return []string{
		"TARGETPLATFORM=" + target.String(),
		"TARGETOS=" + target.OS,
		"TARGETARCH=" + target.Architecture,
		"TARGETVARIANT=" + target.TargetVariant(),
		"BUILDPLATFORM=" + build.String(),
		"BUILDOS=" + build.OS,
		"BUILDARCH=" + build.Architecture,
		"BUILDVARIANT=" + build.TargetVariant(),
	}
}

// setEnv sets k=v in an environment list, keeping the order of first use.
func setEnv(env []string, k, v string) []string {
	for i, kv := range env {
		if name, _, _ := strings.Cut(kv, "="); name == k {
			out := append([]string(nil), env...)
			out[i] = k + "=" + v
			return out
		}
	}
	return append(append([]string(nil), env...), k+"="+v)
}

func lookupEnv(env []string, k string) (string, bool) {
	for _, kv := range env {
		if name, v, _ := strings.Cut(kv, "="); name == k {
			return v, true
		}
	}
	return "", false
}
