package assemble

import (
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// contextSums keeps, between builds, the sha256 of each context file a
// build hashed for its cache keys, with what lstat said of the file then
// (size, modification and change times, inode): a later build reads again
// only the files whose stat differs, as BuildKit, whose context transfer
// compares stats, does. A file changed in the seconds before it was hashed
// is not kept: the file system's clock ticks coarsely, and a change right
// after the hash could leave the same times.
type contextSums struct {
	file    string
	start   time.Time
	mu      sync.Mutex
	old     map[string]fileSum
	now     map[string]fileSum
	changed bool
}

type fileSum struct {
	Size, Mtime, Ctime int64
	Ino                uint64
	Sum                [sha256.Size]byte
}

// settled is how long before a build a file's last change must be for its
// sum to be kept.
var settled = 2 * time.Second

// openContextSums reads what dir keeps for the context at root built with
// the Dockerfile at dockerfile (each Dockerfile its own: they copy
// different files); nil when dir is "".
func openContextSums(dir, root, dockerfile string) *contextSums {
	if dir == "" {
		return nil
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil
	}
	df, err := filepath.Abs(dockerfile)
	if err != nil {
		return nil
	}
	id := sha256.Sum256([]byte(abs + "\x00" + df))
	c := &contextSums{file: filepath.Join(dir, hex.EncodeToString(id[:16])), start: time.Now(), now: map[string]fileSum{}}
	if f, err := os.Open(c.file); err == nil {
		defer f.Close()
		if gob.NewDecoder(f).Decode(&c.old) != nil {
			c.old = nil
		}
	}
	return c
}

// sum is the sha256 of the context file rel, whose lstat is fi: the one
// kept when fi says what it said then, else what read gives.
func (c *contextSums) sum(rel string, fi fs.FileInfo, read func() ([sha256.Size]byte, error)) ([sha256.Size]byte, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if c == nil || !ok {
		return read()
	}
	now := fileSum{Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(), Ino: st.Ino}
	c.mu.Lock()
	kept, ok := c.old[rel]
	if ok && kept.Size == now.Size && kept.Mtime == now.Mtime && kept.Ctime == now.Ctime && kept.Ino == now.Ino {
		c.now[rel] = kept
		c.mu.Unlock()
		return kept.Sum, nil
	}
	c.mu.Unlock()
	sum, err := read()
	if err != nil || time.Unix(0, now.Ctime).After(c.start.Add(-settled)) {
		return sum, err
	}
	now.Sum = sum
	c.mu.Lock()
	c.now[rel], c.changed = now, true
	c.mu.Unlock()
	return sum, nil
}

// save keeps the sums this build used, in place of those kept before,
// when they differ (best effort: without them a build reads the files
// again).
func (c *contextSums) save() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.changed && len(c.now) == len(c.old) {
		return
	}
	if os.MkdirAll(filepath.Dir(c.file), 0o755) != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.file), ".tmp-")
	if err != nil {
		return
	}
	defer os.Remove(tmp.Name())
	err = gob.NewEncoder(tmp).Encode(c.now)
	if cerr := tmp.Close(); err == nil && cerr == nil {
		os.Rename(tmp.Name(), c.file)
	}
}
