package assemble

// This file is the only one that sees BuildKit's Dockerfile parser and shell
// lexer. It maps their tree to our own types, which carry the line number.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// Dockerfile is a parsed Dockerfile: the ARGs before the first FROM, then
// the stages in order.
type Dockerfile struct {
	Name     string // how errors name the file, e.g. "Dockerfile"
	MetaArgs []*Instruction
	Stages   []*Stage
	escape   rune // the escape character of the file (# escape=)
}

// Stage is one FROM and the instructions under it.
type Stage struct {
	Index int
	Name  string // the AS name, lower-cased; "" when unnamed
	From  *Instruction
	Steps []*Instruction
}

// Instruction is one Dockerfile instruction as written.
type Instruction struct {
	Line     int
	Cmd      string              // lower-case keyword: "copy", "run", ...
	Args     []string            // arguments, split as the parser splits them
	JSON     bool                // exec (JSON array) form
	Flags    map[string]string   // --name=value flags (the last of a repeated one)
	FlagList map[string][]string // every value of each flag, in order
	Original string              // the whole instruction as written
	Sub      *Instruction        // the instruction an ONBUILD carries
	// Heredocs are the instruction's inline documents, in order: a RUN's,
	// or a COPY's or ADD's sources (which Args then leaves out).
	Heredocs []Heredoc
	// Script: the RUN is one heredoc alone, the document is its command.
	Script bool
}

// Heredoc is an inline document, <<NAME ... NAME.
type Heredoc struct {
	Name    string // its delimiter: the file a COPY makes of it
	Content string // as written, up to the closing delimiter
	Chomp   bool   // <<-: leading tabs are stripped
	Expand  bool   // the delimiter is unquoted: $VARs are expanded
}

// Text is the document's content, leading tabs stripped for <<-.
func (h Heredoc) Text() string {
	if h.Chomp {
		return parser.ChompHeredocContent(h.Content)
	}
	return h.Content
}

// String is the instruction as written, on one line.
func (in *Instruction) String() string { return strings.TrimSpace(in.Original) }

// allowedFlags lists the flags each instruction takes.
var allowedFlags = map[string][]string{
	"from":        {"platform"},
	"copy":        {"from", "chown", "chmod", "link", "parents", "exclude"},
	"add":         {"chown", "chmod", "link", "exclude", "checksum", "unpack", "keep-git-dir"},
	"run":         {"network", "mount", "security"},
	"healthcheck": {"interval", "timeout", "start-period", "start-interval", "retries"},
}

// laterFlags are BuildKit flags manifold does not support yet.
var laterFlags = map[string][]string{
	"run": {"device"},
}

// Parse reads a Dockerfile. name is how errors will call it.
func Parse(r io.Reader, name string) (*Dockerfile, error) {
	src, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if syntax, _, loc, ok := parser.DetectSyntax(src); ok && !dockerfileFrontend(syntax) {
		line := 1
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		return nil, &Error{File: name, Line: line, Err: fmt.Errorf("# syntax=%s names another frontend: manifold reads Dockerfiles itself (docker/dockerfile syntax)", syntax)}
	}
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, parseError(name, err)
	}
	df := &Dockerfile{Name: name, escape: res.EscapeToken}
	for _, node := range res.AST.Children {
		in, err := convert(name, node)
		if err != nil {
			return nil, err
		}
		if err := df.add(in); err != nil {
			return nil, err
		}
	}
	if len(df.Stages) == 0 {
		return nil, &Error{File: name, Line: 1, Err: errors.New("no FROM instruction: a Dockerfile needs at least one stage")}
	}
	return df, nil
}

// dockerfileFrontend tells whether a # syntax= directive names BuildKit's
// Dockerfile frontend (any version or digest of docker/dockerfile), which
// manifold stands in for.
func dockerfileFrontend(ref string) bool {
	name := strings.TrimPrefix(strings.TrimPrefix(ref, "docker.io/"), "index.docker.io/")
	if i := strings.IndexAny(name, ":@"); i >= 0 {
		name = name[:i]
	}
	return name == "docker/dockerfile" || name == "docker/dockerfile-upstream"
}

func (df *Dockerfile) add(in *Instruction) error {
	switch {
	case in.Cmd == "from":
		st := &Stage{Index: len(df.Stages), From: in}
		if len(in.Args) == 3 && strings.EqualFold(in.Args[1], "as") {
			st.Name = strings.ToLower(in.Args[2])
		} else if len(in.Args) != 1 {
			return df.errorf(in, "FROM takes an image and an optional AS name")
		}
		df.Stages = append(df.Stages, st)
	case len(df.Stages) > 0:
		last := df.Stages[len(df.Stages)-1]
		last.Steps = append(last.Steps, in)
	case in.Cmd == "arg":
		df.MetaArgs = append(df.MetaArgs, in)
	default:
		return df.errorf(in, "%s before the first FROM: only ARG may come first", strings.ToUpper(in.Cmd))
	}
	return nil
}

func convert(file string, node *parser.Node) (*Instruction, error) {
	in := &Instruction{
		Line:     node.StartLine,
		Cmd:      strings.ToLower(node.Value),
		JSON:     node.Attributes["json"],
		Flags:    map[string]string{},
		FlagList: map[string][]string{},
		Original: node.Original,
	}
	fail := func(format string, a ...any) error {
		return &Error{File: file, Line: in.Line, Step: in.String(), Err: fmt.Errorf(format, a...)}
	}
	if _, known := instructions[in.Cmd]; !known {
		return nil, fail("unknown instruction: %s", strings.ToUpper(node.Value))
	}
	for _, f := range node.Flags {
		k, v, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		if slices.Contains(laterFlags[in.Cmd], k) {
			return nil, fail("%s --%s is not supported yet", strings.ToUpper(in.Cmd), k)
		}
		if !strings.HasPrefix(f, "--") || !slices.Contains(allowedFlags[in.Cmd], k) {
			return nil, fail("unknown flag for %s: %s", strings.ToUpper(in.Cmd), f)
		}
		in.Flags[k] = v
		in.FlagList[k] = append(in.FlagList[k], v)
	}
	for n := node.Next; n != nil; n = n.Next {
		if in.Cmd == "onbuild" && len(n.Children) > 0 {
			sub, err := convert(file, n.Children[0])
			if err != nil {
				return nil, err
			}
			switch sub.Cmd {
			case "onbuild", "from", "maintainer":
				return nil, fail("%s is not allowed as an ONBUILD trigger", strings.ToUpper(sub.Cmd))
			}
			sub.Line = in.Line
			in.Sub = sub
			continue
		}
		in.Args = append(in.Args, n.Value)
	}
	if in.Cmd == "onbuild" && in.Sub == nil {
		return nil, fail("ONBUILD needs an instruction")
	}
	if len(node.Heredocs) > 0 {
		if err := heredocs(in, node.Heredocs); err != nil {
			return nil, fail("%v", err)
		}
	}
	return in, nil
}

// heredocs gives in its inline documents as BuildKit reads them: a RUN's
// go to the shell with its command line, a COPY's or ADD's are sources.
func heredocs(in *Instruction, docs []parser.Heredoc) error {
	byName := map[string]parser.Heredoc{}
	for _, d := range docs {
		byName[d.Name] = d
	}
	add := func(d parser.Heredoc) {
		in.Heredocs = append(in.Heredocs, Heredoc{Name: d.Name, Content: d.Content, Chomp: d.Chomp, Expand: d.Expand})
	}
	switch in.Cmd {
	case "run":
		if in.JSON {
			return errors.New("a heredoc needs RUN's shell form, not a JSON array")
		}
		for _, d := range docs {
			add(d)
		}
		in.Script = len(in.Args) == 1 && parser.MustParseHeredoc(in.Args[0]) != nil
	case "copy", "add":
		if len(in.Args) > 0 && parser.MustParseHeredoc(in.Args[len(in.Args)-1]) != nil {
			return fmt.Errorf("%s cannot take a heredoc as its destination", strings.ToUpper(in.Cmd))
		}
		var paths []string
		for i, a := range in.Args {
			if h := parser.MustParseHeredoc(a); h != nil && i < len(in.Args)-1 {
				add(byName[h.Name])
				continue
			}
			paths = append(paths, a)
		}
		in.Args = paths
	default:
		return fmt.Errorf("%s takes no heredoc (RUN, COPY and ADD do)", strings.ToUpper(in.Cmd))
	}
	return nil
}

// instructions are the keywords manifold understands.
var instructions = map[string]struct{}{
	"from": {}, "arg": {}, "env": {}, "label": {}, "cmd": {}, "entrypoint": {},
	"workdir": {}, "user": {}, "expose": {}, "volume": {}, "stopsignal": {},
	"healthcheck": {}, "shell": {}, "onbuild": {}, "maintainer": {},
	"copy": {}, "add": {}, "run": {},
}

// parseTrigger parses an ONBUILD trigger that a base image recorded.
func parseTrigger(file string, line int, trigger string) (*Instruction, error) {
	res, err := parser.Parse(strings.NewReader(trigger))
	if err == nil && len(res.AST.Children) != 1 {
		err = fmt.Errorf("%d instructions, want one", len(res.AST.Children))
	}
	if err != nil {
		return nil, &Error{File: file, Line: line, Err: fmt.Errorf("base image ONBUILD trigger %q: %w", trigger, err)}
	}
	in, err := convert(file, res.AST.Children[0])
	if in != nil {
		in.Line = line
	}
	return in, err
}

// expand expands $VAR, ${VAR:-x} and friends in word as Docker does and
// removes quotes. It also returns the names the word used.
func (df *Dockerfile) expand(word string, env []string) (string, map[string]struct{}, error) {
	// A Lex keeps state while it works: one per call, as platforms build in
	// parallel.
	out, used, err := shell.NewLex(df.escape).ProcessWord(word, shell.EnvsFromSlice(env))
	return out, used, lexError(word, err)
}

// lexError words the lexer's errors for people.
func lexError(word string, err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if _, after, ok := strings.Cut(msg, "failed to process \""+word+"\": "); ok {
		msg = after
	}
	if strings.Contains(msg, "unsupported modifier (\uFFFD)") {
		msg = "missing '}'"
	}
	return fmt.Errorf("expanding %q: %s", word, msg)
}

// expandRaw expands $VARs in a heredoc's text as BuildKit does: quotes
// and escapes are text, kept as they are.
func (df *Dockerfile) expandRaw(text string, env []string) (string, error) {
	lex := shell.NewLex('\\')
	lex.SkipProcessQuotes = true
	out, _, err := lex.ProcessWord(text, shell.EnvsFromSlice(env))
	if err != nil {
		return "", fmt.Errorf("expanding the heredoc: %w", err)
	}
	return out, nil
}

// expandWords expands word and splits it into fields, as EXPOSE needs.
func (df *Dockerfile) expandWords(word string, env []string) ([]string, error) {
	words, err := shell.NewLex(df.escape).ProcessWords(word, shell.EnvsFromSlice(env))
	return words, lexError(word, err)
}

func (df *Dockerfile) errorf(in *Instruction, format string, a ...any) error {
	return &Error{File: df.Name, Line: in.Line, Step: in.String(), Err: fmt.Errorf(format, a...)}
}

// parseError gives the parser's error the file:line form.
func parseError(file string, err error) error {
	var loc interface{ Location() []parser.Range }
	line := 0
	if errors.As(err, &loc) && len(loc.Location()) > 0 {
		line = loc.Location()[0].Start.Line
	}
	msg := err.Error()
	if i := strings.Index(msg, "dockerfile parse error on line "); i >= 0 {
		if j := strings.Index(msg[i:], ": "); j >= 0 {
			msg = msg[i+j+2:]
		}
	}
	return &Error{File: file, Line: line, Err: errors.New(msg)}
}
