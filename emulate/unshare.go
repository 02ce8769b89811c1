package emulate

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
)

// Unshare makes a rootless run root of its own: when the invoking user is
// not root and /etc/subuid and /etc/subgid give it a range (and newuidmap
// is installed), it runs the current program again in a new user namespace
// where that user is root and the range maps to IDs 1 and up, as rootless
// buildah and podman do, and exits with its status. Unpacked bases then keep
// their owners, and steps that change files of other users keep theirs.
// It returns at once as root (in that namespace too), or without a range.
func Unshare() {
	if os.Geteuid() == 0 {
		return
	}
	ids, err := idMappings()
	if err != nil || !ids.external {
		return
	}
	code, err := reexecMapped(ids)
	if err != nil {
		// Going on outside one still works, with the gaps the README names.
		fmt.Fprintf(os.Stderr, "manifold: warning: going on without a user namespace of subordinate IDs: %v\n", err)
		return
	}
	os.Exit(code)
}

func reexecMapped(ids *idPlan) (int, error) {
	runtime.LockOSThread() // the child's parent-death signal follows this thread: see Sandbox.start
	defer runtime.UnlockOSThread()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer readyW.Close()
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = append([]string{awaitName}, os.Args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{readyR}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	readyR.Close()
	if err != nil {
		return 0, err
	}
	// Signals for this process are the child's to act on.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		for sig := range sigs {
			cmd.Process.Signal(sig)
		}
	}()
	if err := ids.mapExternally(cmd.Process.Pid, readyW); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, err
	}
	// From here on the child runs the command: its end is this one's.
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), nil
	case err != nil:
		fmt.Fprintf(os.Stderr, "manifold: %v\n", err)
		return 1, nil
	}
	return 0, nil
}
