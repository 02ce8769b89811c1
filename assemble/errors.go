package assemble

import (
	"fmt"
	"strings"
)

// Error is a build error that knows where it happened: the Dockerfile line,
// the instruction and the platform being built.
type Error struct {
	File     string
	Line     int
	Step     string // the instruction as written
	Platform string
	Err      error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Step != "" {
		b.WriteString(shorten(e.Step))
		if e.Platform != "" {
			fmt.Fprintf(&b, " [%s]", e.Platform)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// shorten keeps an instruction readable in one error line.
func shorten(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}
