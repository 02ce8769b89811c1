package assemble

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// A RUN step's changes go to an overlay's upper directory. On a memory file
// system (tmpfs) a step that makes thousands of files runs several times
// faster than on a disk: there is no journal or inode search behind each
// file made. So steps write there while it has room, and keep their files
// there until the build ends, when they go at once; their layers are on
// disk already.

// memMinFree is the room a memory scratch must have for a step to start in
// it; memFullBelow the room under which a failed step is taken to have
// filled it, and is run again on disk.
var (
	memMinFree   int64 = 1 << 30
	memFullBelow int64 = 16 << 20
)

// memScratch is a build's folder on a memory file system.
type memScratch struct {
	dir  string
	lock *os.File // held while the build runs: a folder whose lock is free is a dead build's
}

// openMemScratch makes the build's folder in parent (a tmpfs such as
// /dev/shm), first removing the folders of builds that ended without
// removing theirs.
func openMemScratch(parent string) (*memScratch, error) {
	old, _ := filepath.Glob(filepath.Join(parent, "manifold-build-*"))
	for _, d := range old {
		if f, err := os.Open(filepath.Join(d, ".lock")); err == nil {
			if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
				removeAll(d)
			}
			f.Close()
		}
	}
	dir, err := os.MkdirTemp(parent, "manifold-build-")
	if err != nil {
		return nil, err
	}
	lock, err := os.Create(filepath.Join(dir, ".lock"))
	if err == nil {
		err = unix.Flock(int(lock.Fd()), unix.LOCK_EX)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &memScratch{dir: dir, lock: lock}, nil
}

// free is how many bytes the memory file system has left.
func (m *memScratch) free() int64 {
	var st unix.Statfs_t
	if unix.Statfs(m.dir, &st) != nil {
		return 0
	}
	return int64(st.Bavail) * st.Bsize
}

// stepDir makes a step's folder: in memory when there is room, else nil.
func (m *memScratch) stepDir() (string, error) {
	if m == nil || m.free() < memMinFree {
		return "", nil
	}
	return os.MkdirTemp(m.dir, "step-")
}

// holds tells whether p is in the memory scratch.
func (m *memScratch) holds(p string) bool {
	return m != nil && strings.HasPrefix(p, m.dir+string(filepath.Separator))
}

func (m *memScratch) close() error {
	if m == nil {
		return nil
	}
	err := removeAll(m.dir)
	m.lock.Close()
	return err
}

// removeAll is os.RemoveAll, also through directories of ours that we may
// not read: a rootless step's overlay leaves its work directory mode 000.
func removeAll(dir string) error {
	err := os.RemoveAll(dir)
	for try := 0; err != nil && try < 16; try++ {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if d != nil && d.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
		err = os.RemoveAll(dir)
	}
	return err
}

// IsMemory tells whether dir is on a memory file system (tmpfs) that this
// process can write to: where Options.MemDir can point.
func IsMemory(dir string) bool {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil || st.Type != unix.TMPFS_MAGIC {
		return false
	}
	return unix.Access(dir, unix.W_OK) == nil
}
