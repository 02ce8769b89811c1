package assemble

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/manifold-build/manifold/layers"
)

// metadata runs an instruction that only edits the image config: no layer
// bytes are read or written.
func (s *state) metadata(in *Instruction) error {
	c := &s.cfg.Config
	var err error
	// History says what the step did, expanded, as BuildKit writes it.
	kw, said := strings.ToUpper(in.Cmd), ""
	switch in.Cmd {
	case "env":
		err = s.pairs(in, func(k, v string) {
			c.Env = setEnv(c.Env, k, v)
			said += " " + k + "=" + v
		})
	case "label":
		err = s.pairs(in, func(k, v string) {
			if c.Labels == nil {
				c.Labels = map[string]string{}
			}
			c.Labels[k] = v
			said += " " + strconv.Quote(k) + "=" + strconv.Quote(v)
		})
	case "cmd":
		c.Cmd = s.command(in)
		s.cmdSet = true
		said = " " + jsonArgs(c.Cmd)
	case "entrypoint":
		c.Entrypoint = s.command(in)
		if !s.cmdSet {
			c.Cmd = nil
		}
		said = " " + jsonArgs(c.Entrypoint)
	case "shell":
		if !in.JSON || len(in.Args) == 0 {
			return fmt.Errorf("SHELL needs the JSON form, e.g. SHELL [\"/bin/sh\", \"-c\"]")
		}
		c.Shell = append([]string(nil), in.Args...)
	case "user":
		c.User, err = s.oneWord(in)
		said = " " + c.User
	case "stopsignal":
		c.StopSignal, err = s.oneWord(in)
	case "maintainer":
		s.cfg.Author = strings.Join(in.Args, " ")
	case "expose":
		err = s.expose(in)
	case "volume":
		err = s.volume(in)
	case "healthcheck":
		err = s.healthcheck(in)
	case "onbuild":
		c.OnBuild = append(c.OnBuild, in.Sub.String())
	default:
		return fmt.Errorf("unsupported instruction %s", strings.ToUpper(in.Cmd))
	}
	if err != nil {
		return err
	}
	if said == "" {
		said = " " + strings.Join(strings.Fields(strings.TrimSpace(in.Original)[len(kw):]), " ")
	}
	s.record(in, kw+said, true, time.Time{})
	return nil
}

// pairs expands ENV and LABEL key/value triples (key, value, separator),
// every one in the environment from before the instruction: in `ENV A=2
// B=$A`, $A is the earlier A, as in BuildKit.
func (s *state) pairs(in *Instruction, set func(k, v string)) error {
	if len(in.Args) == 0 || len(in.Args)%3 != 0 {
		return fmt.Errorf("%s needs key=value pairs", strings.ToUpper(in.Cmd))
	}
	env := s.env()
	for i := 0; i < len(in.Args); i += 3 {
		k, _, err := s.b.df.expand(in.Args[i], env)
		if err != nil {
			return err
		}
		v, _, err := s.b.df.expand(in.Args[i+1], env)
		if err != nil {
			return err
		}
		if k == "" {
			return fmt.Errorf("%s names must not be empty", strings.ToUpper(in.Cmd))
		}
		set(k, v)
	}
	return nil
}

// command is the argv of CMD, ENTRYPOINT or RUN: exec form as written, shell
// form through the stage's SHELL.
// command is a RUN's argv, as BuildKit makes it: the exec form as given;
// the shell form through the stage's shell; a heredoc alone is the
// script the shell runs (or, starting with #!, a file it runs); heredocs
// after a command go to the shell with it, which reads them itself.
func (s *state) command(in *Instruction) []string {
	if in.JSON {
		return append([]string{}, in.Args...)
	}
	line := strings.Join(in.Args, " ")
	switch {
	case len(in.Heredocs) == 0:
	case in.Script && strings.HasPrefix(in.Heredocs[0].Text(), "#!"):
		line = "/dev/pipes/" + in.Heredocs[0].Name
	case in.Script:
		line = in.Heredocs[0].Text()
	default:
		var b strings.Builder
		b.WriteString(line)
		for _, h := range in.Heredocs {
			b.WriteString("\n" + h.Content + h.Name)
		}
		line = b.String()
	}
	return append(s.shell(), line)
}

func (s *state) shell() []string {
	if len(s.cfg.Config.Shell) > 0 {
		return append([]string(nil), s.cfg.Config.Shell...)
	}
	return []string{"/bin/sh", "-c"}
}

func (s *state) oneWord(in *Instruction) (string, error) {
	if len(in.Args) != 1 {
		return "", fmt.Errorf("%s takes exactly one argument", strings.ToUpper(in.Cmd))
	}
	return s.expand(in.Args[0])
}

func (s *state) workdir(ctx context.Context, in *Instruction) error {
	dir, err := s.oneWord(in)
	if err != nil {
		return err
	}
	wd := s.resolve(dir)
	s.cfg.Config.WorkingDir = wd
	if wd == "/" {
		s.record(in, "WORKDIR /", true, time.Time{})
		return nil
	}
	k := key(s.key, "WORKDIR", wd, s.cfg.Config.User)
	return s.cached(k, in, func() (*stepResult, error) {
		l, err := s.workdirLayer(ctx, wd)
		return &stepResult{layer: l, createdBy: "WORKDIR " + wd}, err
	})
}

// workdirLayer makes the directory WORKDIR names, and its parents, where
// the stage lacks them, as BuildKit does: 0755, owned by the USER in
// effect. With nothing to make the layer is empty, as BuildKit's is.
func (s *state) workdirLayer(ctx context.Context, wd string) (v1.Layer, error) {
	real, err := s.realPath(ctx, wd)
	if err != nil {
		return nil, err
	}
	known, err := s.pathHeaders(ctx, real)
	if err != nil {
		return nil, err
	}
	c := &copier{known: known}
	if h := known[real]; h == nil || h.Typeflag != tar.TypeDir {
		if c.ids, err = s.workdirOwner(ctx); err != nil {
			return nil, err
		}
		if err := c.createDirs(real); err != nil {
			return nil, fmt.Errorf("WORKDIR %s: %w", wd, err)
		}
	}
	return layers.New(func(tw *tar.Writer) error { return layers.Write(tw, c.entries, s.b.o.Epoch) }, s.layerOptions())
}

// workdirOwner is who owns the directories WORKDIR makes: the USER in
// effect, found as BuildKit's file operations find it (numbers as they
// are, a user number alone its own group too; a name the image lacks is
// root's).
func (s *state) workdirOwner(ctx context.Context) (*idPair, error) {
	spec := s.cfg.Config.User
	if spec == "" {
		return nil, nil
	}
	users, err := s.users(ctx)
	if err != nil {
		return nil, err
	}
	name, group, _ := strings.Cut(spec, ":")
	var ids idPair
	if u, err := users.Lookup(name, true); err == nil {
		ids = idPair{u.UID, u.GID}
	}
	if group != "" {
		if g, err := users.Lookup("0:"+group, true); err == nil {
			ids.GID = g.GID
		}
	}
	return &ids, nil
}

// resolve makes p absolute against the working directory.
func (s *state) resolve(p string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	wd := s.cfg.Config.WorkingDir
	if wd == "" {
		wd = "/"
	}
	return path.Join(wd, p)
}

func (s *state) expose(in *Instruction) error {
	c := &s.cfg.Config
	for _, a := range in.Args {
		words, err := s.b.df.expandWords(a, s.env())
		if err != nil {
			return err
		}
		for _, w := range words {
			ports, err := parsePorts(w)
			if err != nil {
				return err
			}
			if c.ExposedPorts == nil {
				c.ExposedPorts = map[string]struct{}{}
			}
			for _, p := range ports {
				c.ExposedPorts[p] = struct{}{}
			}
		}
	}
	return nil
}

// parsePorts reads 80, 80/udp or 8000-8002/tcp.
func parsePorts(w string) ([]string, error) {
	spec, proto, _ := strings.Cut(w, "/")
	if proto == "" {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" && proto != "sctp" {
		return nil, fmt.Errorf("invalid protocol in port %q", w)
	}
	lo, hi, isRange := strings.Cut(spec, "-")
	first, err := strconv.ParseUint(lo, 10, 16)
	last := first
	if err == nil && isRange {
		last, err = strconv.ParseUint(hi, 10, 16)
	}
	if err != nil || last < first {
		return nil, fmt.Errorf("invalid port %q", w)
	}
	var out []string
	for p := first; p <= last; p++ {
		out = append(out, fmt.Sprintf("%d/%s", p, proto))
	}
	return out, nil
}

func (s *state) volume(in *Instruction) error {
	c := &s.cfg.Config
	for _, a := range in.Args {
		v, err := s.expand(a)
		if err != nil {
			return err
		}
		if v == "" {
			return fmt.Errorf("VOLUME paths must not be empty")
		}
		if c.Volumes == nil {
			c.Volumes = map[string]struct{}{}
		}
		c.Volumes[v] = struct{}{}
	}
	return nil
}

func (s *state) healthcheck(in *Instruction) error {
	if len(in.Args) == 0 {
		return fmt.Errorf("HEALTHCHECK needs NONE or CMD")
	}
	kind := strings.ToUpper(in.Args[0])
	if kind == "NONE" {
		if len(in.Args) > 1 || len(in.Flags) > 0 {
			return fmt.Errorf("HEALTHCHECK NONE takes no arguments")
		}
		s.cfg.Config.Healthcheck = &v1.HealthConfig{Test: []string{"NONE"}}
		s.startInterval = 0
		return nil
	}
	if kind != "CMD" || len(in.Args) < 2 {
		return fmt.Errorf("HEALTHCHECK needs NONE or CMD followed by a command")
	}
	hc := &v1.HealthConfig{}
	if in.JSON {
		hc.Test = append([]string{"CMD"}, in.Args[1:]...)
	} else {
		hc.Test = []string{"CMD-SHELL", strings.Join(in.Args[1:], " ")}
	}
	for flag, dst := range map[string]*time.Duration{
		"interval": &hc.Interval, "timeout": &hc.Timeout,
		"start-period": &hc.StartPeriod,
	} {
		if v, ok := in.Flags[flag]; ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("HEALTHCHECK --%s: %w", flag, err)
			}
			*dst = d
		}
	}
	s.startInterval = 0
	if v, ok := in.Flags["start-interval"]; ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("HEALTHCHECK --start-interval: %w", err)
		}
		s.startInterval = d
	}
	if v, ok := in.Flags["retries"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("HEALTHCHECK --retries must be a whole number, not %q", v)
		}
		hc.Retries = n
	}
	s.cfg.Config.Healthcheck = hc
	return nil
}

// jsonArgs prints argv as Dockerfile exec form, for history entries.
func jsonArgs(argv []string) string {
	b, _ := json.Marshal(argv)
	return string(b)
}
