package assemble

import (
	"fmt"
	"io"
	"math"
)

// Progress is told what a build does, step by step, to show it (the
// command renders BuildKit's plain format, a live terminal view, or
// nothing).
type Progress interface {
	// Step starts a step, named as BuildKit names it:
	// "[linux/arm64 build 2/5] RUN make".
	Step(name string) ProgressStep
	// Warn reports something that did not stop the build.
	Warn(msg string)
}

// ProgressStep hears one step's output and its end.
type ProgressStep interface {
	io.Writer       // what the step's command prints
	Cached()        // the step's result came from a cache
	Done(err error) // the step ended (err: it failed)
}

// Unwatched is a step nobody watches: output and ends go nowhere.
var Unwatched ProgressStep = nopStep{}

type nopStep struct{}

func (nopStep) Write(b []byte) (int, error) { return len(b), nil }
func (nopStep) Cached()                     {}
func (nopStep) Done(error)                  {}

// stepName names step n (1: the FROM) of total in a stage as BuildKit
// does: the platform when the build has several, the stage's name (or
// stage-N), the step's number padded to the total's width.
func (b *builder) stepName(s *state, n, total int, what string) string {
	name := "["
	if len(b.o.Platforms) > 1 {
		name += s.platform.String() + " "
	}
	if s.stage.Name != "" {
		name += s.stage.Name + " "
	} else {
		name += fmt.Sprintf("stage-%d ", s.stage.Index)
	}
	width := int(1 + math.Log10(float64(total)))
	return name + fmt.Sprintf("%*d/%d] %s", width, n, total, what)
}

func (b *builder) startStep(s *state, n, total int, what string) ProgressStep {
	if b.o.Progress == nil {
		return Unwatched
	}
	return b.o.Progress.Step(b.stepName(s, n, total, what))
}

// out is the step being built's progress, or nobody's.
func (s *state) out() ProgressStep {
	if s.progress == nil {
		return Unwatched
	}
	return s.progress
}
