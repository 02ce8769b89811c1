package emulate

import (
	"fmt"
	"io"
)

// Spec is one command to run in a root filesystem.
type Spec struct {
	Platform Platform
	// The root filesystem: Lower directories (bottom first, never written)
	// under an overlay whose changes go to Upper, with Work as overlayfs's
	// work directory on Upper's file system. Or, without Lower, the
	// directory Rootfs itself, written in place.
	Lower  []string
	Upper  string
	Work   string
	Rootfs string

	Argv     []string
	Env      []string // K=V; PATH is looked up in it
	User     string   // "", name, uid, name:group or uid:gid, resolved in the rootfs
	Workdir  string   // created if missing
	Network  string   // "" or "host": the host's; "none": only loopback
	Hostname string   // default "manifold"

	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Result tells what a run left that is not the command's doing.
type Result struct {
	// Stubs are paths (absolute in the rootfs) the sandbox created as
	// mount points, in creation order: they belong to no layer.
	Stubs []string
	// IDMap maps host IDs back to IDs in the rootfs (nil: the same).
	IDMap *IDMap
	// Emulator is the qemu binary that ran the command, "" when native.
	Emulator string
}

// IDMap is a user namespace's mapping of container IDs to host IDs.
type IDMap struct {
	UIDs, GIDs []IDRange
}

// IDRange maps Size IDs from Container on to Host.
type IDRange struct {
	Container, Host, Size int
}

// ToContainer maps a host uid and gid back into the container.
func (m *IDMap) ToContainer(uid, gid int) (int, int) {
	if m == nil {
		return uid, gid
	}
	return back(m.UIDs, uid), back(m.GIDs, gid)
}

func back(rs []IDRange, id int) int {
	for _, r := range rs {
		if id >= r.Host && id < r.Host+r.Size {
			return r.Container + id - r.Host
		}
	}
	return 65534 // nobody: unmapped
}

// ExitError is a command that ran and exited with a non-zero status.
type ExitError struct {
	Code int
}

func (e *ExitError) Error() string {
	if e.Code > 128 {
		return fmt.Sprintf("exit status %d (signal %d)", e.Code, e.Code-128)
	}
	return fmt.Sprintf("exit status %d", e.Code)
}
