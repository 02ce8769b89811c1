package assemble

import (
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/manifold-build/manifold/emulate"
)

// Secret is what --secret gives a build: a file's contents or an
// environment variable's value, handed to the RUN steps that mount it
// and nowhere else.
type Secret struct {
	File string // read at the step; "" when Env is set
	Env  string // the variable that holds it
}

func (sec Secret) read() ([]byte, error) {
	if sec.File != "" {
		return os.ReadFile(sec.File)
	}
	v, ok := os.LookupEnv(sec.Env)
	if !ok {
		return nil, fmt.Errorf("environment variable %s is not set", sec.Env)
	}
	return []byte(v), nil
}

// runMount is one RUN --mount, as BuildKit reads it.
type runMount struct {
	typ               string // bind (default), cache, tmpfs, secret, ssh
	target, source    string
	from, id, sharing string
	env               string
	size              int64
	uid, gid          int
	mode              fs.FileMode
	readonly          bool
	required          bool
	spec              string // as written, expanded: part of the step's key
	// which of the fields above were given, for check and its defaults
	readonlySet, hasRequired, hasEnv, modeSet, ownerSet bool
}

// parseMount reads a --mount value: comma-separated key=value fields (CSV
// quoting), values expanded with the stage's ARG and ENV.
func parseMount(spec string, expand func(string) (string, error)) (*runMount, error) {
	r := csv.NewReader(strings.NewReader(spec))
	fields, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("--mount=%s: %w", spec, err)
	}
	m := &runMount{typ: "bind"}
	var expanded []string
	for _, field := range fields {
		key, value, hasValue := strings.Cut(field, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		if !hasValue {
			switch key {
			case "readonly", "ro":
				m.readonly, m.readonlySet = true, true
			case "readwrite", "rw":
				m.readonly, m.readonlySet = false, true
			case "required":
				m.required, m.hasRequired = true, true
			default:
				return nil, fmt.Errorf("--mount: invalid field %q: it needs a value (key=value)", field)
			}
			expanded = append(expanded, key)
			continue
		}
		if key == "from" && strings.Contains(value, "$") {
			return nil, errors.New("--mount from= doesn't support variable expansion, define alias stage instead")
		}
		if value, err = expand(value); err != nil {
			return nil, err
		}
		expanded = append(expanded, key+"="+value)
		if err := m.set(key, value); err != nil {
			return nil, fmt.Errorf("--mount: %w", err)
		}
	}
	m.spec = strings.Join(expanded, ",")
	return m, m.check()
}

func (m *runMount) set(key, value string) error {
	boolean := func() (bool, error) {
		b, err := strconv.ParseBool(value)
		if err != nil {
			return false, fmt.Errorf("invalid value for %s: %s", key, value)
		}
		return b, nil
	}
	var err error
	switch key {
	case "type":
		m.typ = strings.ToLower(value)
		switch m.typ {
		case "bind", "cache", "tmpfs", "secret", "ssh":
		default:
			return fmt.Errorf("unsupported mount type %q (bind, cache, tmpfs, secret or ssh)", value)
		}
	case "from":
		m.from = value
	case "source", "src":
		m.source = value
	case "target", "dst", "destination":
		m.target = value
	case "readonly", "ro":
		m.readonly, err = boolean()
		m.readonlySet = true
	case "readwrite", "rw":
		var rw bool
		rw, err = boolean()
		m.readonly, m.readonlySet = !rw, true
	case "required":
		m.required, err = boolean()
		m.hasRequired = true
	case "size":
		if m.size, err = parseBytes(value); err != nil {
			return fmt.Errorf("invalid value for size: %s", value)
		}
	case "id":
		m.id = value
	case "sharing":
		switch value {
		case "shared", "private", "locked":
			m.sharing = value
		default:
			return fmt.Errorf("unsupported sharing value %q (shared, private or locked)", value)
		}
	case "mode":
		n, perr := strconv.ParseUint(value, 8, 32)
		if perr != nil {
			return fmt.Errorf("invalid value %s for mode", value)
		}
		m.mode, m.modeSet = fs.FileMode(n), true
	case "uid", "gid":
		n, perr := strconv.Atoi(value)
		if perr != nil || n < 0 {
			return fmt.Errorf("invalid value %s for %s", value, key)
		}
		if key == "uid" {
			m.uid = n
		} else {
			m.gid = n
		}
		m.ownerSet = true
	case "env":
		m.env, m.hasEnv = value, true
	default:
		return fmt.Errorf("unexpected key %q", key)
	}
	return err
}

func (m *runMount) check() error {
	fileInfo := m.typ == "secret" || m.typ == "ssh" || m.typ == "cache"
	switch {
	case !fileInfo && (m.modeSet || m.ownerSet):
		return fmt.Errorf("--mount: mode, uid and gid are not allowed for %q mounts", m.typ)
	case m.hasRequired && m.typ != "secret" && m.typ != "ssh":
		return fmt.Errorf("--mount: unexpected key 'required' for mount type %q", m.typ)
	case m.sharing != "" && m.typ != "cache":
		return fmt.Errorf("--mount: sharing is for cache mounts, not %q ones", m.typ)
	case m.size != 0 && m.typ != "tmpfs":
		return fmt.Errorf("--mount: size is for tmpfs mounts, not %q ones", m.typ)
	case m.hasEnv && m.typ != "secret":
		return fmt.Errorf("--mount: env is for secret mounts, not %q ones", m.typ)
	case m.typ == "secret" && m.from != "":
		return errors.New("--mount: a secret mount takes no from")
	case m.typ == "secret" && m.source == "" && m.target == "" && m.id == "":
		return errors.New("--mount: a secret mount needs an id, a source or a target")
	case m.typ == "secret" && m.source != "" && m.id != "":
		return errors.New("--mount: a secret mount takes a source or an id, not both")
	case m.target == "" && m.typ != "secret" && m.typ != "ssh":
		return fmt.Errorf("--mount: a %s mount needs a target", m.typ)
	}
	if !m.readonlySet {
		m.readonly = m.typ != "cache" && m.typ != "tmpfs"
	}
	if m.typ == "cache" && m.sharing == "" {
		m.sharing = "shared"
	}
	if !m.modeSet {
		m.mode = 0o755
		if m.typ == "secret" {
			m.mode = 0o400
		} else if m.typ == "ssh" {
			m.mode = 0o600
		}
	}
	return nil
}

var sizeRE = regexp.MustCompile(`^(\d+)([kmg]?)b?$`)

// parseBytes reads 64m, 1g, 100k or a number of bytes, as tmpfs size= does.
func parseBytes(s string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.ToLower(s))
	if m == nil {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, err
	}
	return n << map[string]int{"": 0, "k": 10, "m": 20, "g": 30}[m[2]], nil
}

// stepMounts is what a RUN's mounts put in its sandbox, and what must be
// undone after it.
type stepMounts struct {
	mounts  []emulate.Mount
	env     []string // secrets as variables, SSH_AUTH_SOCK: never in the key or the image
	cleanup []func()
}

func (sm *stepMounts) close() {
	for i := len(sm.cleanup) - 1; i >= 0; i-- {
		sm.cleanup[i]()
	}
}

// parseMounts reads a RUN's --mount flags; nothing is prepared yet.
func (s *state) parseMounts(in *Instruction) ([]*runMount, error) {
	var out []*runMount
	for _, spec := range in.FlagList["mount"] {
		m, err := parseMount(spec, s.expand)
		if err != nil {
			return nil, err
		}
		if m.target != "" && !path.IsAbs(m.target) {
			m.target = path.Join("/", s.cfg.Config.WorkingDir, m.target)
		}
		out = append(out, m)
	}
	return out, nil
}

// mountKeys names what a step's mounts read, for its cache key: the
// mounts as written, and for a bind mount the contents it binds. A cache
// mount's contents, secrets and SSH agents are never part of it.
func (s *state) mountKeys(ctx context.Context, ms []*runMount) ([]string, error) {
	var keys []string
	for _, m := range ms {
		keys = append(keys, m.spec)
		if m.typ != "bind" {
			continue
		}
		if m.from == "" {
			d, err := s.b.contextDigest([]string{path.Join("/", m.source)})
			if err != nil {
				return nil, fmt.Errorf("--mount source %s: %w", m.source, err)
			}
			keys = append(keys, "context:"+d)
			continue
		}
		f, err := s.tree(ctx, m.from)
		if err != nil {
			return nil, err
		}
		keys = append(keys, f.id)
	}
	return keys, nil
}

// prepareMounts makes what a step's mounts need on the host: bind
// sources, cache directories (locked while used when sharing=locked),
// tmpfs, secrets copied to a private tmpfs directory, SSH agent sockets.
func (s *state) prepareMounts(ctx context.Context, ms []*runMount) (*stepMounts, error) {
	sm := &stepMounts{}
	for i, m := range ms {
		if err := s.prepareMount(ctx, sm, m, i); err != nil {
			sm.close()
			return nil, err
		}
	}
	return sm, nil
}

func (s *state) prepareMount(ctx context.Context, sm *stepMounts, m *runMount, n int) error {
	switch m.typ {
	case "tmpfs":
		sm.mounts = append(sm.mounts, emulate.Mount{Target: m.target, Size: m.size})
	case "bind":
		src, err := s.bindSource(ctx, m)
		if err != nil {
			return err
		}
		if !m.readonly { // writes are thrown away after the step
			tmp, err := os.MkdirTemp(s.b.workDir, "bind-")
			if err != nil {
				return err
			}
			sm.cleanup = append(sm.cleanup, func() { os.RemoveAll(tmp) })
			dst := filepath.Join(tmp, "src")
			if err := copyTree(src, dst); err != nil {
				return fmt.Errorf("--mount source %s: %w", m.source, err)
			}
			src = dst
		}
		fi, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("--mount source %s: %w", m.source, err)
		}
		sm.mounts = append(sm.mounts, emulate.Mount{Target: m.target, Source: src, File: !fi.IsDir(), ReadOnly: m.readonly})
	case "cache":
		dir, release, err := s.cacheMount(ctx, m)
		if err != nil {
			return err
		}
		sm.cleanup = append(sm.cleanup, release)
		sm.mounts = append(sm.mounts, emulate.Mount{Target: m.target, Source: dir, ReadOnly: m.readonly})
	case "secret":
		return s.secretMount(sm, m)
	case "ssh":
		id := m.sshID()
		sock, ok := s.b.o.SSH[id]
		if !ok {
			if m.required {
				return fmt.Errorf("--mount=type=ssh: no SSH agent %q given (manifold build --ssh %s=$SSH_AUTH_SOCK)", id, id)
			}
			return nil
		}
		target := m.target
		if target == "" {
			target = fmt.Sprintf("/run/buildkit/ssh_agent.%d", n)
		}
		sm.mounts = append(sm.mounts, emulate.Mount{Target: target, Source: sock, File: true})
		sm.env = append(sm.env, "SSH_AUTH_SOCK="+target)
	}
	return nil
}

// bindSource is the host path a bind mount shows: in the context, or in
// a stage's or an image's files, never outside them.
func (s *state) bindSource(ctx context.Context, m *runMount) (string, error) {
	rel := strings.TrimPrefix(path.Clean("/"+m.source), "/")
	if m.from == "" {
		return s.contextTree(rel)
	}
	f, err := s.tree(ctx, m.from)
	if err != nil {
		return "", err
	}
	root, err := s.b.sandbox.unpacked(ctx, f.layers)
	if err != nil {
		return "", fmt.Errorf("unpacking --mount from=%s: %w", m.from, err)
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return "", err
	}
	defer r.Close()
	if rel != "" {
		if _, err := r.Stat(rel); err != nil {
			return "", fmt.Errorf("--mount source %s: %w", m.source, err)
		}
	}
	return filepath.Join(root, rel), nil
}

// contextTree is the context's rel as a bind mount shows it: without what
// .dockerignore leaves out. With no .dockerignore it is the context's own
// directory; else a copy made of hardlinks (or copies, across
// filesystems) in the build's scratch directory.
func (s *state) contextTree(rel string) (string, error) {
	sf := s.b.ctxDir.source()
	if rel == "" {
		rel = "."
	}
	if _, err := os.Lstat(sf.abs(rel)); err != nil {
		return "", fmt.Errorf("--mount source %s: not in the build context", rel)
	}
	if s.b.ctxDir.ignore == nil {
		return sf.abs(rel), nil
	}
	tmp, err := os.MkdirTemp(s.b.workDir, "context-")
	if err != nil {
		return "", err
	}
	dst := filepath.Join(tmp, "src")
	err = sf.walk(rel, func(p string, _ fs.DirEntry) error {
		sub, _ := filepath.Rel(sf.abs(rel), sf.abs(p))
		return copyEntry(sf.abs(p), filepath.Join(dst, sub), true)
	})
	return dst, err
}

// cacheMount returns the directory of a cache mount, per id and platform,
// made with its uid, gid and mode the first time (seeded from its from=
// source, if any), and what to call when the step is done with it.
func (s *state) cacheMount(ctx context.Context, m *runMount) (string, func(), error) {
	id := m.id
	if id == "" {
		id = path.Clean(m.target)
	}
	base := s.b.o.CacheMounts
	if base == "" {
		base = filepath.Join(s.b.workDir, "cache-mounts")
	}
	sum := sha256.Sum256([]byte(id + "\x00" + s.platform.String()))
	dir := filepath.Join(base, hex.EncodeToString(sum[:16]))
	if err := os.MkdirAll(base, 0o700); err != nil {
		return "", nil, err
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", nil, err
	}
	release := func() { lock.Close() }
	switch m.sharing {
	case "locked":
		if err := flock(ctx, lock); err != nil {
			release()
			return "", nil, err
		}
	case "private":
		if unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			// In use: this step gets one of its own, thrown away after.
			release()
			tmp, err := os.MkdirTemp(s.b.workDir, "cache-private-")
			if err != nil {
				return "", nil, err
			}
			if err := s.fillCache(ctx, m, tmp); err != nil {
				os.RemoveAll(tmp)
				return "", nil, err
			}
			return tmp, func() { os.RemoveAll(tmp) }, nil
		}
	default:
		unix.Flock(int(lock.Fd()), unix.LOCK_SH) // a prune waits for shared users
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		tmp, err := os.MkdirTemp(base, ".new-")
		if err == nil {
			err = s.fillCache(ctx, m, tmp)
		}
		if err == nil {
			err = os.Rename(tmp, dir)
		}
		if err != nil {
			os.RemoveAll(tmp)
			if _, serr := os.Stat(dir); serr != nil {
				release()
				return "", nil, fmt.Errorf("making cache mount %s: %w", id, err)
			}
		}
	}
	now := time.Now()
	os.Chtimes(dir, now, now) // the last use, for pruning
	return dir, release, nil
}

// fillCache gives a new cache directory its owner and mode, and the files
// of its from= stage or image (under source), as BuildKit seeds one.
func (s *state) fillCache(ctx context.Context, m *runMount, dir string) error {
	if m.from != "" {
		f, err := s.tree(ctx, m.from)
		if err != nil {
			return err
		}
		root, err := s.b.sandbox.unpacked(ctx, f.layers)
		if err != nil {
			return err
		}
		src := filepath.Join(root, path.Clean("/"+m.source))
		os.Remove(dir)
		return copyTree(src, dir)
	}
	if err := os.Chmod(dir, m.mode); err != nil {
		return err
	}
	return os.Lchown(dir, m.uid, m.gid)
}

// requiredGiven checks that the secrets and SSH agents a step requires
// were given to the build.
func (s *state) requiredGiven(ms []*runMount) error {
	for _, m := range ms {
		if !m.required {
			continue
		}
		switch id := m.secretID(); m.typ {
		case "secret":
			if _, ok := s.b.o.Secrets[id]; !ok {
				return fmt.Errorf("secret %s is required but was not given (manifold build --secret id=%s,src=FILE)", id, id)
			}
		case "ssh":
			if _, ok := s.b.o.SSH[m.sshID()]; !ok {
				return fmt.Errorf("--mount=type=ssh: no SSH agent %q given (manifold build --ssh %s=$SSH_AUTH_SOCK)", m.sshID(), m.sshID())
			}
		}
	}
	return nil
}

// secretID is the secret a mount names: id, else source, else its
// target's base name.
func (m *runMount) secretID() string {
	switch {
	case m.source != "":
		return m.source
	case m.id != "":
		return m.id
	}
	return path.Base(m.target)
}

func (m *runMount) sshID() string {
	if m.id == "" {
		return "default"
	}
	return m.id
}

// secretMount puts a secret in the step: as a file on a private tmpfs
// directory (removed after the step) bound read-only at its target, or as
// an environment variable.
func (s *state) secretMount(sm *stepMounts, m *runMount) error {
	id := m.secretID()
	sec, ok := s.b.o.Secrets[id]
	if !ok {
		if m.required {
			return fmt.Errorf("secret %s is required but was not given (manifold build --secret id=%s,src=FILE)", id, id)
		}
		return nil
	}
	data, err := sec.read()
	if err != nil {
		return fmt.Errorf("secret %s: %w", id, err)
	}
	if m.hasEnv {
		sm.env = append(sm.env, m.env+"="+string(data))
		if m.target == "" {
			return nil
		}
	}
	target := m.target
	if target == "" {
		target = "/run/secrets/" + path.Base(id)
	}
	dir, err := os.MkdirTemp(secretsDir(), "manifold-secret-")
	if err != nil {
		return err
	}
	sm.cleanup = append(sm.cleanup, func() { os.RemoveAll(dir) })
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(file, m.mode); err != nil {
		return err
	}
	if err := os.Lchown(file, m.uid, m.gid); err != nil {
		return err
	}
	sm.mounts = append(sm.mounts, emulate.Mount{Target: target, Source: file, File: true, ReadOnly: true})
	return nil
}

// secretsDir is where secrets wait for their step: memory (/dev/shm), never
// a disk, when there is one to write to.
func secretsDir() string {
	if unix.Access("/dev/shm", unix.W_OK) == nil {
		return "/dev/shm"
	}
	return os.TempDir()
}

// flock takes an exclusive lock on f, giving up when ctx ends.
func flock(ctx context.Context, f *os.File) error {
	done := make(chan error, 1)
	go func() { done <- unix.Flock(int(f.Fd()), unix.LOCK_EX) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		f.Close() // the waiting flock fails with it
		return ctx.Err()
	}
}

// copyTree copies the tree at src (a directory or a file) to dst, keeping
// modes, owners and links.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		return copyEntry(p, filepath.Join(dst, rel), false)
	})
}

// copyEntry copies the directory, symlink or file at src to target, with
// its mode and owner; with link, a file becomes a hardlink where it can.
// Devices, fifos and sockets are not copied.
func copyEntry(src, target string, link bool) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	switch {
	case fi.IsDir():
		if err := os.MkdirAll(target, fi.Mode().Perm()); err != nil {
			return err
		}
	case fi.Mode()&fs.ModeSymlink != 0:
		to, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(to, target); err != nil {
			return err
		}
	case fi.Mode().IsRegular():
		if link && os.Link(src, target) == nil {
			return nil // the same inode: its mode and owner already
		}
		if err := copyFile(src, target, fi.Mode()); err != nil {
			return err
		}
	default:
		return nil
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		os.Lchown(target, int(st.Uid), int(st.Gid))
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return os.Chmod(target, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
	}
	return nil
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode.Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

// PruneCacheMounts removes RUN --mount=type=cache directories in dir,
// least recently used first, until what is left takes at most keep bytes;
// a directory in use by a build is left alone. It returns the bytes freed.
func PruneCacheMounts(dir string, keep int64) (int64, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	type mount struct {
		path string
		size int64
		used time.Time
	}
	var ms []mount
	var total int64
	for _, de := range des {
		if !de.IsDir() || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		p := filepath.Join(dir, de.Name())
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		m := mount{path: p, size: treeBytes(p), used: fi.ModTime()}
		ms = append(ms, m)
		total += m.size
	}
	slices.SortFunc(ms, func(a, b mount) int { return a.used.Compare(b.used) })
	var freed int64
	for _, m := range ms {
		if total <= keep {
			break
		}
		lock, err := os.OpenFile(m.path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			continue
		}
		if unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			if os.RemoveAll(m.path) == nil {
				total -= m.size
				freed += m.size
			}
		}
		lock.Close()
	}
	return freed, nil
}

// treeBytes is the bytes of the files in a tree.
func treeBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
