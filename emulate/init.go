package emulate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// initName is argv[0] of the re-executed binary when it is to be the
// sandbox's init.
const initName = "manifold-sandbox-init"

// initConfig is what the parent tells the init, as JSON on fd 3.
type initConfig struct {
	Lower           []string
	Upper, Work     string
	Rootfs          string
	Merged          string            // the empty directory to build the root on
	Shared          map[string]string // path in the root → copy of the host's file to bind there
	Mounts          []Mount
	Argv, Env       []string
	User, Workdir   string
	Hostname        string
	NoNetwork       bool
	Personality     int
	Binfmt          string // a binfmt_misc registration for a private instance
	SetgroupsDenied bool
}

// initReport is what the init tells the parent, as JSON on fd 4, just
// before the command starts (or instead, when setting up failed).
type initReport struct {
	Stubs   []string `json:",omitempty"`
	Started bool     `json:",omitempty"`
	Error   string   `json:",omitempty"`
	Overlay bool     `json:",omitempty"` // the error is overlayfs failing to mount
	Signal  int      `json:",omitempty"` // at the end: the signal that killed the command
}

// Main runs the sandbox init when this process was started as one, and then
// exits; otherwise it returns at once. Every binary that uses a Sandbox
// calls it first thing in main (and in TestMain).
func Main() {
	if len(os.Args) == 0 {
		return
	}
	switch os.Args[0] {
	case awaitName:
		os.Exit(awaitIDMap(os.Args[1:]))
	case initName:
		os.Exit(runInit())
	}
}

// awaitName starts a process in a user namespace whose ID maps newuidmap
// writes after it started: it waits for them, then executes argv, because
// execve grants a process its capabilities in the namespace only once its
// uid maps to root there.
const awaitName = "manifold-await-idmap"

func awaitIDMap(argv []string) int {
	var b [1]byte
	if n, err := unix.Read(3, b[:]); n != 1 || err != nil {
		return 125
	}
	if len(argv) > 0 && argv[0] != initName {
		unix.Close(3) // only a sandbox init reads on: its config follows
	}
	err := unix.Exec("/proc/self/exe", argv, os.Environ())
	fmt.Fprintf(os.Stderr, "manifold: re-executing in the new user namespace: %v\n", err)
	return 125
}

func runInit() int {
	report := os.NewFile(4, "report")
	fail := func(format string, a ...any) int {
		json.NewEncoder(report).Encode(initReport{Error: fmt.Sprintf(format, a...)})
		return 125
	}
	var cfg initConfig
	if err := json.NewDecoder(os.NewFile(3, "config")).Decode(&cfg); err != nil {
		return fail("reading sandbox config: %v", err)
	}
	stubs, err := setupRoot(&cfg)
	var oe *overlayError
	if errors.As(err, &oe) {
		json.NewEncoder(report).Encode(initReport{Error: oe.msg, Overlay: true})
		return 125
	}
	if err != nil {
		return fail("%v", err)
	}
	proc, err := startCommand(&cfg)
	var nf notFound
	if errors.As(err, &nf) {
		// As a shell says it: on the step's stderr, with status 127.
		json.NewEncoder(report).Encode(initReport{Stubs: stubs, Started: true})
		fmt.Fprintf(os.Stderr, "%v\n", err)
		return 127
	}
	if err != nil {
		return fail("%v", err)
	}
	if err := json.NewEncoder(report).Encode(initReport{Stubs: stubs, Started: true}); err != nil {
		return 125
	}
	code, sig := reap(proc.Pid)
	if sig != 0 {
		json.NewEncoder(report).Encode(initReport{Signal: sig})
	}
	return code
}

// startCommand resolves the user, the working directory and the program,
// then starts the command.
func startCommand(cfg *initConfig) (*os.Process, error) {
	// personality(2) is per thread, and a child inherits its forking
	// thread's: set it and fork on the same one.
	runtime.LockOSThread()
	if cfg.Personality != 0 {
		if _, _, e := unix.RawSyscall(unix.SYS_PERSONALITY, uintptr(cfg.Personality), 0, 0); e != 0 {
			return nil, fmt.Errorf("setting personality: %v", e)
		}
	}
	cred, home, err := lookupUser(cfg.User)
	if err != nil {
		return nil, err
	}
	cred.NoSetGroups = cfg.SetgroupsDenied
	wd := cfg.Workdir
	if wd == "" {
		wd = "/"
	}
	if err := mkdirOwned(wd, int(cred.Uid), int(cred.Gid)); err != nil {
		return nil, fmt.Errorf("creating working directory %s: %w", wd, err)
	}
	env := cfg.Env
	if !hasEnv(env, "HOME") && home != "" {
		env = append(env, "HOME="+home)
	}
	path, err := lookPath(cfg.Argv[0], env)
	if err != nil {
		return nil, err
	}
	proc, err := os.StartProcess(path, cfg.Argv, &os.ProcAttr{
		Dir:   wd,
		Env:   env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Credential: cred},
	})
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", cfg.Argv[0], err)
	}
	return proc, nil
}

// mkdirOwned makes dir and its missing parents, owned by the step's user,
// as BuildKit makes a WORKDIR.
func mkdirOwned(dir string, uid, gid int) error {
	var missing []string
	for d := filepath.Clean(dir); d != "/"; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !os.IsExist(err) {
			return err
		}
		if err := os.Lchown(missing[i], uid, gid); err != nil {
			return err
		}
	}
	return nil
}

// reap waits for the command, reaping every orphan on the way, and returns
// the command's exit status, or the signal that killed it. When the init
// exits, the kernel ends every other process of the step's PID namespace.
func reap(main int) (code, signal int) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 125, 0
		}
		if pid != main {
			continue
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal()), int(ws.Signal())
		}
		return ws.ExitStatus(), 0
	}
}

// notFound is a command that is not there to run.
type notFound struct{ prog string }

func (e notFound) Error() string {
	return fmt.Sprintf("exec %s: executable file not found in $PATH", e.prog)
}

// lookPath finds a program on the PATH of the command's environment.
func lookPath(prog string, env []string) (string, error) {
	if strings.Contains(prog, "/") {
		if _, err := os.Stat(prog); err != nil {
			return "", notFound{prog}
		}
		return prog, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + prog
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", notFound{prog}
}

func hasEnv(env []string, k string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, k+"=") {
			return true
		}
	}
	return false
}
