package assemble

import (
	"context"
	"errors"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Runner runs the command of a RUN step in a sandbox over the stage's files.
// Package emulate implements it.
type Runner interface {
	Run(ctx context.Context, spec RunSpec) error
}

// RunSpec is one RUN step for a Runner.
type RunSpec struct {
	Platform v1.Platform
	Lower    []string // the stage's file tree, bottom directory first; never written
	Upper    string   // an empty directory that receives the step's changes
	Work     string   // an empty directory on Upper's file system, for overlayfs
	Argv     []string
	Env      []string
	User     string // as USER says: name or uid, with optional :group
	Workdir  string
	Network  string // "" (host) or "none"
	Stdout   io.Writer
	Stderr   io.Writer
}

func (s *state) run(ctx context.Context, in *Instruction) error {
	return errors.New("RUN is not supported yet")
}
