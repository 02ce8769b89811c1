package emulate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// setupRoot builds the step's root at cfg.Merged and moves into it: the
// overlay (or the bare rootfs), /proc, a minimal /dev, the host's
// resolv.conf and hosts read-only, the private binfmt_misc instance, then
// pivot_root. It returns the mount points it had to create.
func setupRoot(cfg *initConfig) ([]string, error) {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("making mounts private: %w", err)
	}
	root := cfg.Merged
	if err := mountRootfs(cfg, root); err != nil {
		return nil, err
	}
	st := &stubber{root: root}
	steps := []func() error{
		func() error { return mountProc(st) },
		func() error { return mountSys(st) },
		func() error { return mountDev(st) },
		func() error { return bindShared(st, "/etc/resolv.conf", cfg.Shared["/etc/resolv.conf"]) },
		func() error { return bindShared(st, "/etc/hosts", cfg.Shared["/etc/hosts"]) },
		func() error { return addMounts(st, cfg.Mounts) },
		func() error { return registerBinfmt(root, cfg.Binfmt) },
		func() error { return pivot(root) },
		func() error { return unix.Sethostname([]byte(cfg.Hostname)) },
	}
	if cfg.NoNetwork {
		steps = append(steps, loopbackUp)
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return st.created, nil
}

func mountRootfs(cfg *initConfig, root string) error {
	if len(cfg.Lower) == 0 {
		if err := unix.Mount(cfg.Rootfs, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("binding rootfs %s: %w", cfg.Rootfs, err)
		}
		return nil
	}
	lower := make([]string, len(cfg.Lower))
	for i, d := range cfg.Lower {
		lower[len(lower)-1-i] = d // overlayfs lists the top layer first
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,userxattr", strings.Join(lower, ":"), cfg.Upper, cfg.Work)
	err := unix.Mount("overlay", root, "overlay", 0, opts)
	if len(opts) >= maxMountData {
		// mount(2) takes one page of options: a long stack of layers goes
		// in one directory at a time (Linux 6.8 and later).
		err = mountOverlayStack(root, lower, cfg.Upper, cfg.Work)
	}
	if err != nil {
		return &overlayError{msg: err.Error()}
	}
	return nil
}

// maxMountData is how many bytes of options mount(2) reads.
const maxMountData = 4095

// mountOverlayStack mounts an overlay through the new mount API, adding
// lower directories (top first) one by one with "lowerdir+".
func mountOverlayStack(root string, lower []string, upper, work string) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen: %w", err)
	}
	defer unix.Close(fd)
	for _, l := range lower {
		if err := unix.FsconfigSetString(fd, "lowerdir+", l); err != nil {
			return fmt.Errorf("adding lower directory %s: %w", l, err)
		}
	}
	if err := unix.FsconfigSetString(fd, "upperdir", upper); err != nil {
		return err
	}
	if err := unix.FsconfigSetString(fd, "workdir", work); err != nil {
		return err
	}
	if err := unix.FsconfigSetFlag(fd, "userxattr"); err != nil {
		return err
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("creating the overlay: %w", err)
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsmount: %w", err)
	}
	defer unix.Close(mfd)
	return unix.MoveMount(mfd, "", unix.AT_FDCWD, root, unix.MOVE_MOUNT_F_EMPTY_PATH)
}

// overlayError says overlayfs could not be mounted for a step: Run then
// falls back to a copy of the root filesystem, where it was given one.
type overlayError struct{ msg string }

func (e *overlayError) Error() string { return "mounting overlayfs: " + e.msg }

// stubber makes mount points inside the root, never through a symlink, and
// remembers what it had to create.
type stubber struct {
	root    string
	created []string
}

// ensure makes p (absolute in the root) a directory, or an empty file when
// file is set. ok is false when a symlink stands in the way.
func (s *stubber) ensure(p string, file bool) (host string, ok bool, err error) {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	cur := s.root
	for i, part := range parts {
		cur = filepath.Join(cur, part)
		last := i == len(parts)-1
		fi, err := os.Lstat(cur)
		switch {
		case err == nil && fi.Mode()&fs.ModeSymlink != 0:
			return "", false, nil
		case err == nil && !last && !fi.IsDir():
			return "", false, nil
		case err == nil:
			continue
		case !errors.Is(err, fs.ErrNotExist):
			return "", false, err
		case last && file:
			f, err := os.OpenFile(cur, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return "", false, err
			}
			f.Close()
		default:
			if err := os.Mkdir(cur, 0o755); err != nil {
				return "", false, err
			}
		}
		s.created = append(s.created, "/"+strings.Join(parts[:i+1], "/"))
	}
	return cur, true, nil
}

// mountPoint makes sure the directory p exists to mount on: one the image
// has as a symlink is an error.
func (s *stubber) mountPoint(p string) (string, error) {
	host, ok, err := s.ensure(p, false)
	switch {
	case err != nil:
		return "", fmt.Errorf("preparing %s: %w", p, err)
	case !ok:
		return "", fmt.Errorf("preparing %s: it is a symlink in the image", p)
	}
	return host, nil
}

// mountSys makes /sys, read-only sysfs where the namespaces allow it (a
// user namespace that shares the host's network may not mount sysfs: then
// it stays an empty directory), as runc gives BuildKit's steps one.
func mountSys(s *stubber) error {
	p, err := s.mountPoint("/sys")
	if err != nil {
		return err
	}
	unix.Mount("sysfs", p, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	return nil
}

func mountProc(s *stubber) error {
	p, err := s.mountPoint("/proc")
	if err != nil {
		return err
	}
	if err := unix.Mount("proc", p, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting /proc: %w", err)
	}
	return nil
}

// mountDev makes /dev a tmpfs with the host's null, zero, full, random,
// urandom and tty bound in (a user namespace may not mknod), a devpts
// instance, /dev/shm and the usual symlinks.
func mountDev(s *stubber) error {
	dev, err := s.mountPoint("/dev")
	if err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=65536k"); err != nil {
		return fmt.Errorf("mounting /dev: %w", err)
	}
	for _, n := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		target := filepath.Join(dev, n)
		if err := os.WriteFile(target, nil, 0o666); err != nil {
			return err
		}
		if err := unix.Mount("/dev/"+n, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding /dev/%s: %w", n, err)
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return fmt.Errorf("mounting /dev/pts: %w", err)
	}
	if err := unix.Mount("shm", filepath.Join(dev, "shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k"); err != nil {
		return fmt.Errorf("mounting /dev/shm: %w", err)
	}
	for name, target := range map[string]string{
		"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	return nil
}

// bindShared binds src (the step's copy of a host file) read-only at the
// path p of the root. A root whose path is a symlink keeps it: nothing is
// bound through links.
func bindShared(s *stubber, p, src string) error {
	if src == "" {
		return nil // the host has none to share
	}
	target, ok, err := s.ensure(p, true)
	if err != nil || !ok {
		return err
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding %s: %w", p, err)
	}
	if err := remountReadOnly(src, target); err != nil {
		return fmt.Errorf("making %s read-only: %w", p, err)
	}
	return nil
}

// addMounts puts a step's own mounts into the root, in order (a later one
// may go inside an earlier one). Nothing is mounted through a symlink of
// the image.
func addMounts(s *stubber, ms []Mount) error {
	for _, m := range ms {
		target, ok, err := s.ensure(m.Target, m.File)
		switch {
		case err != nil:
			return fmt.Errorf("preparing %s: %w", m.Target, err)
		case !ok:
			return fmt.Errorf("mounting on %s: it is a symlink, or under a file, in the image", m.Target)
		}
		if m.Source == "" {
			opts := "mode=1777"
			if m.Size > 0 {
				opts += fmt.Sprintf(",size=%d", m.Size)
			}
			if err := unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
				return fmt.Errorf("mounting a tmpfs on %s: %w", m.Target, err)
			}
			continue
		}
		if err := unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("binding %s on %s: %w", m.Source, m.Target, err)
		}
		if m.ReadOnly {
			if err := remountReadOnly(m.Source, target); err != nil {
				return fmt.Errorf("making %s read-only: %w", m.Target, err)
			}
		}
	}
	return nil
}

// remountReadOnly makes the bind mount at target read-only, keeping the
// flags of the mount src is on (a user namespace may not drop them).
func remountReadOnly(src, target string) error {
	var sfs unix.Statfs_t
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY)
	if unix.Statfs(src, &sfs) == nil {
		for st, ms := range map[int64]uintptr{unix.ST_NOSUID: unix.MS_NOSUID, unix.ST_NODEV: unix.MS_NODEV, unix.ST_NOEXEC: unix.MS_NOEXEC} {
			if sfs.Flags&st != 0 {
				flags |= ms
			}
		}
	}
	return unix.Mount("", target, "", flags, "")
}

// registerBinfmt mounts a binfmt_misc instance of the sandbox's own user
// namespace inside the new root, so it lives as long as the step, and
// registers qemu in it. Flag F opens the interpreter now, from the host.
func registerBinfmt(root, reg string) error {
	if reg == "" {
		return nil
	}
	dir := filepath.Join(root, "proc/sys/fs/binfmt_misc")
	if err := unix.Mount("binfmt_misc", dir, "binfmt_misc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting a private binfmt_misc: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "register"), []byte(reg), 0); err != nil {
		return fmt.Errorf("registering qemu in the private binfmt_misc: %w", err)
	}
	return nil
}

func pivot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the old root: %w", err)
	}
	return unix.Chdir("/")
}

// loopbackUp brings lo up in a new network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	return nil
}
