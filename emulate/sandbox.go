package emulate

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Sandbox runs commands in root filesystems, each in new namespaces, under
// qemu-user-static when the platform is foreign. The zero value is ready.
type Sandbox struct {
	// QemuDir holds the qemu-*-static binaries; default: found on PATH.
	QemuDir string
	// HostBinfmt uses the host's binfmt_misc instead of a private instance:
	// a handler (with flag F) that already serves the platform, or else one
	// that manifold registers for the step, as root, and removes afterwards.
	// Without it, the host's handlers are the fallback for kernels older
	// than 6.7, and nothing is registered on the host.
	HostBinfmt bool
	// Self is the binary to re-execute as the sandbox's init; it must call
	// emulate.Main first thing. Default /proc/self/exe.
	Self string
}

// Run runs spec.Argv in the sandbox and waits for it. A command that exits
// non-zero gives an *ExitError.
func (s *Sandbox) Run(ctx context.Context, spec Spec) (*Result, error) {
	if len(spec.Argv) == 0 {
		return nil, errors.New("no command to run")
	}
	cfg, res, cleanup, err := s.prepare(spec)
	if err != nil {
		return nil, err
	}
	if len(spec.Lower) > 0 {
		for _, d := range []string{spec.Upper, spec.Work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
		}
	}
	defer cleanup()
	scratch, err := os.MkdirTemp("", "manifold-step-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	cfg.Merged = filepath.Join(scratch, "root")
	if err := os.Mkdir(cfg.Merged, 0o755); err != nil {
		return nil, err
	}
	if cfg.Shared, err = copyHostFiles(scratch, "/etc/resolv.conf", "/etc/hosts"); err != nil {
		return nil, err
	}
	ids, err := idMappings()
	if err != nil {
		return nil, err
	}
	res.IDMap = ids.result()
	cfg.SetgroupsDenied = ids.setgroupsDenied
	report, err := s.start(ctx, spec, cfg, ids)
	if report != nil {
		res.Stubs = report.Stubs
	}
	return res, err
}

// prepare works out how the platform runs and what the init must do.
func (s *Sandbox) prepare(spec Spec) (*initConfig, *Result, func(), error) {
	nop := func() {}
	if len(spec.Lower) == 0 && spec.Rootfs == "" {
		return nil, nil, nop, errors.New("no root filesystem given")
	}
	ex, err := plan(hostArch(), spec.Platform)
	if err != nil {
		return nil, nil, nop, err
	}
	hostname := spec.Hostname
	if hostname == "" {
		hostname = "manifold"
	}
	cfg := &initConfig{
		Lower: spec.Lower, Upper: spec.Upper, Work: spec.Work, Rootfs: spec.Rootfs,
		Argv: spec.Argv, Env: spec.Env, User: spec.User, Workdir: spec.Workdir,
		Hostname: hostname, NoNetwork: spec.Network == "none", Personality: ex.personality,
	}
	res := &Result{}
	if ex.native {
		return cfg, res, nop, nil
	}
	interp, err := interpreter(ex.emu, spec.Platform, s.QemuDir)
	if err != nil {
		return nil, nil, nop, err
	}
	res.Emulator = interp
	switch {
	case !s.HostBinfmt && privateBinfmt():
		cfg.Binfmt = registration("qemu-"+ex.emu.qemu, ex.emu, interp)
		return cfg, res, nop, nil
	case hasHostHandler(ex.emu):
		return cfg, res, nop, nil
	case s.HostBinfmt && os.Geteuid() == 0:
		remove, err := hostRegister(ex.emu, interp)
		if err != nil {
			return nil, nil, nop, err
		}
		return cfg, res, remove, nil
	case s.HostBinfmt:
		return nil, nil, nop, fmt.Errorf("running %s: no host binfmt_misc handler serves it, and registering one takes root", spec.Platform)
	}
	return nil, nil, nop, fmt.Errorf("running %s needs binfmt_misc: this kernel has no private instances (Linux 6.7+) "+
		"and no host handler with flag F serves it; as root, --binfmt=host registers one for the build", spec.Platform)
}

// copyHostFiles copies host files the step gets to see into dir: the step
// binds the copies, so that nothing it does reaches the host's own files.
// A file the host lacks is left out.
func copyHostFiles(dir string, files ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		c := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(c, data, 0o644); err != nil {
			return nil, err
		}
		out[f] = c
	}
	return out, nil
}

func hasHostHandler(emu emulator) bool {
	_, ok := hostHandler(emu)
	return ok
}

// start runs the init and waits for it and its command.
func (s *Sandbox) start(ctx context.Context, spec Spec, cfg *initConfig, ids *idPlan) (*initReport, error) {
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer cfgW.Close()
	repR, repW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		return nil, err
	}
	defer repR.Close()
	cmd := s.initCommand(ctx, spec, cfg.NoNetwork, ids)
	cmd.ExtraFiles = []*os.File{cfgR, repW}
	err = cmd.Start()
	cfgR.Close()
	repW.Close()
	if err != nil {
		return nil, fmt.Errorf("starting sandbox: %w", err)
	}
	if err := ids.mapExternally(cmd.Process.Pid, cfgW); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	if err := json.NewEncoder(cfgW).Encode(cfg); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("configuring sandbox: %w", err)
	}
	cfgW.Close()
	var report initReport
	repErr := json.NewDecoder(bufio.NewReader(repR)).Decode(&report)
	waitErr := cmd.Wait()
	if ctx.Err() != nil {
		return &report, ctx.Err()
	}
	if repErr != nil && repErr != io.EOF {
		return nil, fmt.Errorf("sandbox init: %w (%v)", repErr, waitErr)
	}
	return &report, report.outcome(waitErr)
}

// initCommand is the re-executed binary as the init of new namespaces.
func (s *Sandbox) initCommand(ctx context.Context, spec Spec, noNetwork bool, ids *idPlan) *exec.Cmd {
	self := s.Self
	if self == "" {
		self = "/proc/self/exe"
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Args = []string{initName}
	if ids.external {
		cmd.Args = []string{awaitName, initName}
	}
	cmd.Env = []string{}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = spec.Stdin, spec.Stdout, spec.Stderr
	flags := syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC
	if noNetwork {
		flags |= syscall.CLONE_NEWNET
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: uintptr(flags), Pdeathsig: syscall.SIGKILL}
	ids.apply(cmd.SysProcAttr)
	return cmd
}

// outcome turns what the init reported and how it ended into the run's
// error: a set-up failure, or the command's exit status.
func (r *initReport) outcome(waitErr error) error {
	switch {
	case r.Overlay:
		return &OverlayError{Err: errors.New(r.Error)}
	case r.Error != "":
		return errors.New(r.Error)
	case !r.Started:
		return fmt.Errorf("the sandbox ended before its command started: %v", waitErr)
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		return &ExitError{Code: ee.ExitCode()}
	}
	return waitErr
}

// idPlan is how the sandbox's user namespace maps IDs: the identity as
// root; as another user, that user as root and its /etc/subuid range above
// (through newuidmap), or just that user as root.
type idPlan struct {
	uids, gids      []IDRange
	external        bool // newuidmap/newgidmap write the maps
	setgroupsDenied bool
}

func idMappings() (*idPlan, error) {
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		// The identity over every ID this namespace has: all of them on the
		// host, the mapped ones in a user namespace (see Unshare).
		uids, err := identity("/proc/self/uid_map")
		if err != nil {
			return nil, err
		}
		gids, err := identity("/proc/self/gid_map")
		if err != nil {
			return nil, err
		}
		return &idPlan{uids: uids, gids: gids}, nil
	}
	p := &idPlan{uids: []IDRange{{0, uid, 1}}, gids: []IDRange{{0, gid, 1}}}
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	su, okU := subIDs("/etc/subuid", u.Username, uid)
	sg, okG := subIDs("/etc/subgid", u.Username, uid)
	_, errU := exec.LookPath("newuidmap")
	_, errG := exec.LookPath("newgidmap")
	if okU && okG && errU == nil && errG == nil {
		p.uids = append(p.uids, IDRange{1, su.Host, su.Size})
		p.gids = append(p.gids, IDRange{1, sg.Host, sg.Size})
		p.external = true
		return p, nil
	}
	p.setgroupsDenied = true
	return p, nil
}

// identity maps every ID of the current namespace to itself, from its
// uid_map or gid_map.
func identity(file string) ([]IDRange, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var out []IDRange
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var inside, outside, size int
		if _, err := fmt.Sscan(line, &inside, &outside, &size); err != nil {
			return nil, fmt.Errorf("reading %s: %w", file, err)
		}
		out = append(out, IDRange{Container: inside, Host: inside, Size: size})
	}
	return out, nil
}

// subIDs reads the first range of name (or uid) in /etc/subuid or subgid.
func subIDs(file, name string, uid int) (IDRange, bool) {
	data, err := os.ReadFile(file)
	if err != nil {
		return IDRange{}, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) != 3 || (f[0] != name && f[0] != strconv.Itoa(uid)) {
			continue
		}
		start, err1 := strconv.Atoi(f[1])
		size, err2 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil && size > 0 {
			return IDRange{Host: start, Size: size}, true
		}
	}
	return IDRange{}, false
}

func (p *idPlan) apply(a *syscall.SysProcAttr) {
	if p.external {
		return
	}
	for _, r := range p.uids {
		a.UidMappings = append(a.UidMappings, syscall.SysProcIDMap{ContainerID: r.Container, HostID: r.Host, Size: r.Size})
	}
	for _, r := range p.gids {
		a.GidMappings = append(a.GidMappings, syscall.SysProcIDMap{ContainerID: r.Container, HostID: r.Host, Size: r.Size})
	}
	a.GidMappingsEnableSetgroups = !p.setgroupsDenied
}

// mapExternally writes the maps of the init's namespace with newuidmap and
// newgidmap, then tells the init, which waits for it.
func (p *idPlan) mapExternally(pid int, ready io.Writer) error {
	if !p.external {
		return nil
	}
	for _, m := range []struct {
		tool   string
		ranges []IDRange
	}{{"newuidmap", p.uids}, {"newgidmap", p.gids}} {
		args := []string{strconv.Itoa(pid)}
		for _, r := range m.ranges {
			args = append(args, strconv.Itoa(r.Container), strconv.Itoa(r.Host), strconv.Itoa(r.Size))
		}
		if out, err := exec.Command(m.tool, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s %v: %v: %s", m.tool, args, err, strings.TrimSpace(string(out)))
		}
	}
	_, err := ready.Write([]byte{'\n'})
	return err
}

func (p *idPlan) result() *IDMap {
	if os.Getuid() == 0 {
		return nil
	}
	return &IDMap{UIDs: p.uids, GIDs: p.gids}
}
