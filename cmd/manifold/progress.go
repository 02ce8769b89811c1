package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/morikuni/aec"
	"golang.org/x/term"

	"github.com/manifold-build/manifold/assemble"
)

// progress shows a build as it goes: BuildKit's plain format, a live
// terminal view, JSON lines, or nothing.
type progress interface {
	assemble.Progress
	close()
}

// newProgress makes the display for mode (auto: tty when w is a terminal,
// else plain; plain; tty; rawjson; quiet: none).
func newProgress(mode string, w io.Writer) (progress, error) {
	if mode == "auto" {
		mode = "plain"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			mode = "tty"
		}
	}
	switch mode {
	case "plain":
		return &plain{w: w, start: time.Now()}, nil
	case "rawjson":
		return &plain{w: w, start: time.Now(), json: true}, nil
	case "tty":
		f, ok := w.(*os.File)
		if !ok || !term.IsTerminal(int(f.Fd())) {
			return &plain{w: w, start: time.Now()}, nil // no terminal: no escape codes
		}
		return newTTY(f), nil
	case "quiet":
		return nil, nil
	}
	return nil, usagef("--progress must be auto, plain, tty, rawjson or quiet, not %q", mode)
}

// plain prints BuildKit's plain progress: "#7 [linux/arm64 2/3] RUN make",
// the step's output as "#7 0.412 line", then "#7 DONE 4.2s", "#7 CACHED"
// or "#7 ERROR: ...". With json, one JSON object per event instead.
type plain struct {
	mu    sync.Mutex
	w     io.Writer
	next  int
	start time.Time
	json  bool
}

type plainStep struct {
	p       *plain
	id      int
	name    string
	started time.Time
	buf     []byte
	cached  bool
}

func (p *plain) Step(name string) assemble.ProgressStep {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	s := &plainStep{p: p, id: p.next, name: name, started: time.Now()}
	s.emit("start", name)
	return s
}

func (p *plain) Warn(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json {
		json.NewEncoder(p.w).Encode(map[string]any{"event": "warning", "message": msg})
		return
	}
	fmt.Fprintf(p.w, "WARNING: %s\n", msg)
}

func (p *plain) close() {}

// emit writes one event; the caller holds p.mu.
func (s *plainStep) emit(event, text string) {
	p := s.p
	if p.json {
		rec := map[string]any{"id": s.id, "event": event, "time": time.Now().UTC().Format(time.RFC3339Nano)}
		switch event {
		case "start":
			rec["name"] = text
		case "log":
			rec["data"] = text
		case "error":
			rec["error"] = text
		case "done":
			rec["seconds"] = time.Since(s.started).Seconds()
		}
		json.NewEncoder(p.w).Encode(rec)
		return
	}
	switch event {
	case "start":
		fmt.Fprintf(p.w, "#%d %s\n", s.id, text)
	case "log":
		fmt.Fprintf(p.w, "#%d %.3f %s\n", s.id, time.Since(s.started).Seconds(), text)
	case "cached":
		fmt.Fprintf(p.w, "#%d CACHED\n\n", s.id)
	case "error":
		fmt.Fprintf(p.w, "#%d ERROR: %s\n\n", s.id, text)
	case "done":
		fmt.Fprintf(p.w, "#%d DONE %.1fs\n\n", s.id, time.Since(s.started).Seconds())
	}
}

func (s *plainStep) Write(b []byte) (int, error) {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	eachLine(&s.buf, b, func(line string) { s.emit("log", line) })
	return len(b), nil
}

// eachLine adds b to what buf holds of a line and calls fn for each line
// that is whole now.
func eachLine(buf *[]byte, b []byte, fn func(string)) {
	*buf = append(*buf, b...)
	for {
		i := bytes.IndexByte(*buf, '\n')
		if i < 0 {
			return
		}
		fn(string((*buf)[:i]))
		*buf = (*buf)[i+1:]
	}
}

func (s *plainStep) Cached() { s.cached = true }

func (s *plainStep) Done(err error) {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	if len(s.buf) > 0 {
		s.emit("log", string(s.buf))
		s.buf = nil
	}
	switch {
	case err != nil:
		s.emit("error", err.Error())
	case s.cached:
		s.emit("cached", "")
	default:
		s.emit("done", "")
	}
}

// tty is a live view that redraws in place: a header with the running
// time and steps done, a line per step with its timer, and the last lines
// of what running steps print.
type tty struct {
	mu      sync.Mutex
	f       *os.File
	start   time.Time
	steps   []*ttyStep
	warns   []string
	drawn   int // lines of the last frame
	stop    chan struct{}
	stopped chan struct{}
}

type ttyStep struct {
	t       *tty
	name    string
	started time.Time
	ended   time.Time
	state   string // "", "DONE", "CACHED", "ERROR"
	tail    []string
	partial []byte
}

const ttyTail = 6 // lines of a running step's output shown

func newTTY(f *os.File) *tty {
	t := &tty{f: f, start: time.Now(), stop: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(t.stopped)
		tick := time.NewTicker(150 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-t.stop:
				t.draw(true)
				return
			case <-tick.C:
				t.draw(false)
			}
		}
	}()
	return t
}

func (t *tty) Step(name string) assemble.ProgressStep {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &ttyStep{t: t, name: name, started: time.Now()}
	t.steps = append(t.steps, s)
	return s
}

func (t *tty) Warn(msg string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.warns = append(t.warns, msg)
}

func (t *tty) close() {
	close(t.stop)
	<-t.stopped
}

func (s *ttyStep) Write(b []byte) (int, error) {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	eachLine(&s.partial, b, func(line string) {
		s.tail = append(s.tail, line)
		if len(s.tail) > ttyTail {
			s.tail = s.tail[len(s.tail)-ttyTail:]
		}
	})
	return len(b), nil
}

func (s *ttyStep) Cached() {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	s.state = "CACHED"
}

func (s *ttyStep) Done(err error) {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	s.ended = time.Now()
	switch {
	case err != nil:
		s.state = "ERROR"
		s.tail = append(s.tail, "ERROR: "+err.Error())
	case s.state == "":
		s.state = "DONE"
	}
}

// draw replaces the last frame with the current one. The final frame
// keeps every step and the output of those that failed.
func (t *tty) draw(final bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	width, height, err := term.GetSize(int(t.f.Fd()))
	if err != nil || width < 20 {
		width, height = 80, 24
	}
	var lines []string
	done := 0
	for _, s := range t.steps {
		if s.state != "" {
			done++
		}
	}
	state := "Building"
	if final {
		state = "Finished"
	}
	lines = append(lines, fmt.Sprintf("[+] %s %.1fs (%d/%d)", state, time.Since(t.start).Seconds(), done, len(t.steps)))
	for _, s := range t.steps {
		end := s.ended
		if end.IsZero() {
			end = time.Now()
		}
		timer := fmt.Sprintf("%.1fs", end.Sub(s.started).Seconds())
		switch s.state {
		case "CACHED":
			timer = "CACHED"
		case "ERROR":
			timer = "ERROR"
		}
		lines = append(lines, fit(" => "+s.name, timer, width))
		if s.state == "" || s.state == "ERROR" {
			for _, l := range s.tail {
				lines = append(lines, fit(" => => "+l, "", width))
			}
		}
	}
	for _, w := range t.warns {
		lines = append(lines, fit("WARNING: "+w, "", width))
	}
	if !final && len(lines) > height-1 {
		lines = append(lines[:1], lines[len(lines)-(height-2):]...) // the newest steps
	}
	var b strings.Builder
	if t.drawn > 0 {
		b.WriteString(aec.Up(uint(t.drawn)).String())
	}
	for _, l := range lines {
		b.WriteString(aec.EraseLine(aec.EraseModes.All).String())
		b.WriteString(l)
		b.WriteString("\n")
	}
	for i := len(lines); i < t.drawn; i++ { // a shorter frame: clear what is left
		b.WriteString(aec.EraseLine(aec.EraseModes.All).String() + "\n")
	}
	if n := t.drawn - len(lines); n > 0 {
		b.WriteString(aec.Up(uint(n)).String())
	}
	t.f.WriteString(b.String())
	t.drawn = len(lines)
}

// fit puts text and, right-aligned, a timer on one line of the width,
// short of its last column (where terminals differ on wrapping).
func fit(text, timer string, width int) string {
	width--
	room := width - len(timer) - 1
	if room < 10 {
		room = 10
	}
	if timer == "" {
		room = width
	}
	if len(text) > room {
		text = text[:room-1] + "…"
	}
	if timer == "" {
		return text
	}
	return fmt.Sprintf("%-*s %s", room, text, timer)
}
