package emulate

import (
	"fmt"
	"io"

	"github.com/manifold-build/manifold/emulate/platform"
)

// Spec is one command to run over a root filesystem.
type Spec struct {
	Platform platform.Platform
	// Lower are the root filesystem's directories, bottom first, in
	// overlayfs's format; they are never written. The command's changes go
	// to an upper directory that the run makes in Scratch, an empty
	// directory on a disk (not tmpfs: overlayfs needs xattrs there).
	Lower   []string
	Scratch string
	// Unpack fills an empty directory with the whole root filesystem, to
	// run in and change in place where overlayfs cannot be mounted; nil
	// makes that an error.
	Unpack func(dir string) error
	// Rootfs, instead of Lower, is a directory to run in and change in
	// place.
	Rootfs string

	// Mounts are put into the command's view over the root filesystem;
	// none of them, nor a mount point made for them, is in its changes.
	Mounts []Mount

	Argv     []string
	Env      []string // K=V; PATH is looked up in it
	User     string   // "", name, uid, name:group or uid:gid, resolved in the rootfs
	Workdir  string   // created if missing
	Network  string   // "" or "host": the host's; "none": only loopback
	Hostname string   // default "manifold"

	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Mount is a host directory or file bound into the root, or a tmpfs.
type Mount struct {
	Target   string // absolute path in the root; made when missing
	Source   string // the host's directory or file; "" for a tmpfs
	File     bool   // Source is a file: Target is made as an empty file
	ReadOnly bool
	Size     int64 // a tmpfs's size in bytes; 0: the kernel's default
}

// Result is where a run left the command's changes, with nothing of the
// sandbox's own in them (the mount points it made are gone).
type Result struct {
	// Upper holds the changes in overlayfs's format, to stack on
	// Spec.Lower: deletions are 0/0 character devices, a replaced
	// directory carries an opaque xattr. Set when the run went through an
	// overlay.
	Upper string
	// Rootfs is the whole tree the command ran in and changed: Spec.Rootfs,
	// or the tree Spec.Unpack made when overlayfs could not be mounted.
	Rootfs string
	// Emulator is the qemu binary that ran the command, "" when native.
	Emulator string

	ids *idPlan
}

// ContainerIDs maps an owner found on disk in Upper or Rootfs back to the
// IDs the command saw (they differ when the sandbox ran in a user
// namespace of its own).
func (r *Result) ContainerIDs(uid, gid int) (int, int) {
	if r.ids == nil || r.ids.identity {
		return uid, gid
	}
	return back(r.ids.uids, uid), back(r.ids.gids, gid)
}

// idRange maps size IDs from container on to host.
type idRange struct {
	container, host, size int
}

func back(rs []idRange, id int) int {
	for _, r := range rs {
		if id >= r.host && id < r.host+r.size {
			return r.container + id - r.host
		}
	}
	return 65534 // nobody: unmapped
}

// ExitError is a command that ran and exited with a non-zero status, or
// was killed by a signal.
type ExitError struct {
	Code   int // the exit status, or 128 + the signal as a shell reports it
	Signal int // the signal that killed the command, 0 when it exited
}

func (e *ExitError) Error() string {
	if e.Signal != 0 {
		return fmt.Sprintf("killed by signal %d", e.Signal)
	}
	return fmt.Sprintf("exit status %d", e.Code)
}
