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
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/manifold-build/manifold/emulate/platform"
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
// non-zero gives an *ExitError, with the Result still telling where its
// changes are.
func (s *Sandbox) Run(ctx context.Context, spec Spec) (*Result, error) {
	if len(spec.Argv) == 0 {
		return nil, errors.New("no command to run")
	}
	cfg, res, cleanup, err := s.prepare(spec)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	if len(spec.Lower) == 0 {
		res.Rootfs = spec.Rootfs
		return res, s.runIn(ctx, spec, cfg, res)
	}
	if spec.Scratch == "" {
		return nil, errors.New("no scratch directory for the step's changes")
	}
	cfg.Upper, cfg.Work = filepath.Join(spec.Scratch, "upper"), filepath.Join(spec.Scratch, "work")
	for _, d := range []string{cfg.Upper, cfg.Work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	res.Upper = cfg.Upper
	err = s.runIn(ctx, spec, cfg, res)
	var oe *overlayError
	if !errors.As(err, &oe) || spec.Unpack == nil {
		return res, err
	}
	return s.runUnpacked(ctx, spec, cfg, res, oe)
}

// runUnpacked runs the step again on a writable copy of the whole root
// filesystem, where overlayfs could not be mounted.
func (s *Sandbox) runUnpacked(ctx context.Context, spec Spec, cfg *initConfig, res *Result, why *overlayError) (*Result, error) {
	if spec.Stderr != nil {
		fmt.Fprintf(spec.Stderr, "%v: running on a copy of the root filesystem instead\n", why)
	}
	os.RemoveAll(res.Upper)
	os.RemoveAll(cfg.Work)
	dir := filepath.Join(spec.Scratch, "rootfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	if err := spec.Unpack(dir); err != nil {
		return nil, fmt.Errorf("unpacking the root filesystem: %w", err)
	}
	cfg.Lower, cfg.Upper, cfg.Work, cfg.Rootfs = nil, "", "", dir
	res.Upper, res.Rootfs = "", dir
	return res, s.runIn(ctx, spec, cfg, res)
}

// runIn runs the init on cfg and, once it is done, takes the mount points
// it made out of the tree that holds the changes.
func (s *Sandbox) runIn(ctx context.Context, spec Spec, cfg *initConfig, res *Result) error {
	scratch, err := os.MkdirTemp("", "manifold-step-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	cfg.Merged = filepath.Join(scratch, "root")
	if err := os.Mkdir(cfg.Merged, 0o755); err != nil {
		return err
	}
	if cfg.Shared, err = copyHostFiles(scratch, "/etc/resolv.conf", "/etc/hosts"); err != nil {
		return err
	}
	cfg.SetgroupsDenied = res.ids.setgroupsDenied
	report, err := s.start(ctx, spec, cfg, res.ids)
	if report != nil {
		changed := res.Upper
		if changed == "" {
			changed = res.Rootfs
		}
		removeStubs(changed, report.Stubs, spec.Mounts)
	}
	return err
}

// keptStubs are the mount points a step's layer keeps when the image had
// none, as BuildKit's (runc's) steps leave them: empty /dev, /proc, /sys;
// unless the step has a mount of its own below one, whose stubs BuildKit
// removes, that one with them.
var keptStubs = map[string]bool{"/dev": true, "/proc": true, "/sys": true}

// removeStubs takes the sandbox's other mount points out of the tree that
// holds a step's changes, deepest first; one the step filled stays.
func removeStubs(dir string, stubs []string, mounts []Mount) {
	for i := len(stubs) - 1; i >= 0; i-- {
		if keptStubs[stubs[i]] && !slices.ContainsFunc(mounts, func(m Mount) bool { return strings.HasPrefix(m.Target, stubs[i]+"/") }) {
			continue
		}
		p := filepath.Join(dir, stubs[i])
		if fi, err := os.Lstat(p); err == nil && (fi.IsDir() || fi.Size() == 0) {
			os.Remove(p) // fails, as it should, on a directory the step filled
		}
	}
}

// prepare works out how the platform runs, what the init must do, and
// what must be undone afterwards (always: cleanup is never nil).
func (s *Sandbox) prepare(spec Spec) (*initConfig, *Result, func(), error) {
	nop := func() {}
	if len(spec.Lower) == 0 && spec.Rootfs == "" {
		return nil, nil, nop, errors.New("no root filesystem given")
	}
	ex, err := plan(platform.Host(), spec.Platform)
	if err != nil {
		return nil, nil, nop, err
	}
	ids, err := idMappings()
	if err != nil {
		return nil, nil, nop, err
	}
	hostname := spec.Hostname
	if hostname == "" {
		hostname = "manifold"
	}
	cfg := &initConfig{
		Lower: spec.Lower, Rootfs: spec.Rootfs, Mounts: spec.Mounts,
		Argv: spec.Argv, Env: spec.Env, User: spec.User, Workdir: spec.Workdir,
		Hostname: hostname, NoNetwork: spec.Network == "none", Personality: ex.personality,
	}
	res := &Result{ids: ids}
	if ex.native {
		return cfg, res, nop, nil
	}
	interp, err := interpreter(ex.emu, spec.Platform, s.QemuDir)
	if err != nil {
		return nil, nil, nop, err
	}
	res.Emulator = interp
	remove, err := s.binfmt(cfg, ex.emu, interp, spec.Platform)
	if err != nil {
		return nil, nil, nop, err
	}
	return cfg, res, remove, nil
}

// binfmt chooses how the kernel hands the platform's binaries to qemu: a
// private binfmt_misc instance, a host handler, or (as root, when asked)
// a host registration for the step, which the returned func removes.
func (s *Sandbox) binfmt(cfg *initConfig, emu emulator, interp string, p platform.Platform) (func(), error) {
	nop := func() {}
	switch {
	case !s.HostBinfmt && privateBinfmt():
		cfg.Binfmt = registration("qemu-"+emu.qemu, emu, interp)
		return nop, nil
	case hasHostHandler(emu):
		return nop, nil
	case s.HostBinfmt && os.Geteuid() == 0:
		return hostRegister(emu, interp)
	case s.HostBinfmt:
		return nil, fmt.Errorf("running %s: no host binfmt_misc handler serves it, and registering one takes root", p)
	}
	return nil, fmt.Errorf("running %s needs binfmt_misc: this kernel has no private instances (Linux 6.7+) "+
		"and no host handler with flag F serves it; as root, --binfmt=host registers one for the build", p)
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
	// The init's parent-death signal (SIGKILL) comes when the OS thread
	// that started it ends, and Go ends a thread whose locked goroutine
	// returns: held by this goroutine until the init is reaped, the thread
	// outlives it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
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
	var report, end initReport
	dec := json.NewDecoder(bufio.NewReader(repR))
	repErr := dec.Decode(&report)
	if repErr == nil && report.Started {
		dec.Decode(&end) // the command's end, when the init saw it
	}
	waitErr := cmd.Wait()
	if ctx.Err() != nil {
		return &report, ctx.Err()
	}
	if repErr != nil && repErr != io.EOF {
		return nil, fmt.Errorf("reading the sandbox init's report: %w", errors.Join(repErr, waitErr))
	}
	return &report, report.outcome(end, waitErr)
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

// outcome turns what the init reported, at the start and at the end of
// the command, and how the init ended into the run's error: a set-up
// failure, or the command's exit status or signal.
func (r *initReport) outcome(end initReport, waitErr error) error {
	switch {
	case r.Overlay:
		return &overlayError{msg: r.Error}
	case r.Error != "":
		return errors.New(r.Error)
	case !r.Started && waitErr != nil:
		return fmt.Errorf("the sandbox ended before its command started: %w", waitErr)
	case !r.Started:
		return errors.New("the sandbox ended before its command started")
	case end.Signal != 0:
		return &ExitError{Code: 128 + end.Signal, Signal: end.Signal}
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
	uids, gids      []idRange
	identity        bool // every ID maps to itself
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
		return &idPlan{uids: uids, gids: gids, identity: true}, nil
	}
	p := &idPlan{uids: []idRange{{0, uid, 1}}, gids: []idRange{{0, gid, 1}}}
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	su, okU := subIDs("/etc/subuid", u.Username, uid)
	sg, okG := subIDs("/etc/subgid", u.Username, uid)
	_, errU := exec.LookPath("newuidmap")
	_, errG := exec.LookPath("newgidmap")
	if okU && okG && errU == nil && errG == nil {
		p.uids = append(p.uids, idRange{1, su.host, su.size})
		p.gids = append(p.gids, idRange{1, sg.host, sg.size})
		p.external = true
		return p, nil
	}
	p.setgroupsDenied = true
	return p, nil
}

// identity maps every ID of the current namespace to itself, from its
// uid_map or gid_map.
func identity(file string) ([]idRange, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var out []idRange
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var inside, outside, size int
		if _, err := fmt.Sscan(line, &inside, &outside, &size); err != nil {
			return nil, fmt.Errorf("reading %s: %w", file, err)
		}
		out = append(out, idRange{container: inside, host: inside, size: size})
	}
	return out, nil
}

// subIDs reads the first range of name (or uid) in /etc/subuid or subgid.
func subIDs(file, name string, uid int) (idRange, bool) {
	data, err := os.ReadFile(file)
	if err != nil {
		return idRange{}, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) != 3 || (f[0] != name && f[0] != strconv.Itoa(uid)) {
			continue
		}
		start, err1 := strconv.Atoi(f[1])
		size, err2 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil && size > 0 {
			return idRange{host: start, size: size}, true
		}
	}
	return idRange{}, false
}

func (p *idPlan) apply(a *syscall.SysProcAttr) {
	if p.external {
		return
	}
	for _, r := range p.uids {
		a.UidMappings = append(a.UidMappings, syscall.SysProcIDMap{ContainerID: r.container, HostID: r.host, Size: r.size})
	}
	for _, r := range p.gids {
		a.GidMappings = append(a.GidMappings, syscall.SysProcIDMap{ContainerID: r.container, HostID: r.host, Size: r.size})
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
		ranges []idRange
	}{{"newuidmap", p.uids}, {"newgidmap", p.gids}} {
		args := []string{strconv.Itoa(pid)}
		for _, r := range m.ranges {
			args = append(args, strconv.Itoa(r.container), strconv.Itoa(r.host), strconv.Itoa(r.size))
		}
		if out, err := exec.Command(m.tool, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s %v: %v: %s", m.tool, args, err, strings.TrimSpace(string(out)))
		}
	}
	_, err := ready.Write([]byte{'\n'})
	return err
}
