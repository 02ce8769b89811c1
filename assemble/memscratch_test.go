package assemble_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/assemble/testkit"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// RUN steps write their changes in the memory scratch while it has room: a
// step that fills it runs again on disk, saying so, and the build gives the
// same files; the scratch is left empty, and a dead build's folder there is
// removed by the next build.
func TestMemoryScratch(t *testing.T) {
	testkit.RequireRoot(t, "to mount a small tmpfs and run steps")
	mem := t.TempDir()
	if err := unix.Mount("tmpfs", mem, "tmpfs", 0, "size=4m"); err != nil {
		t.Fatalf("mounting a tmpfs: %v", err)
	}
	defer unix.Unmount(mem, 0)
	if !assemble.IsMemory(mem) {
		t.Fatalf("IsMemory(%s) is false for a tmpfs", mem)
	}
	defer assemble.SetMemLimits(1<<20, 512<<10)()
	dead := filepath.Join(mem, "manifold-build-dead")
	os.MkdirAll(dead, 0o755)
	os.WriteFile(filepath.Join(dead, ".lock"), nil, 0o644)

	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64")
	ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf(
		"FROM %s\nRUN echo small > /small\nRUN dd if=/dev/zero of=/big bs=1M count=6 && echo big > /after\nRUN cat /small /after > /both\n", base)})
	var out progressLog
	res := mustBuild(t, ctxDir, []string{"linux/amd64"}, func(o *assemble.Options) {
		withSandbox(o)
		o.MemDir = mem
		o.Progress = &out
	})
	if got := out.String(); strings.Count(got, "running it again on disk") != 1 || !strings.Contains(got, "No space left on device") {
		t.Errorf("the output says %q, want the dd step to fill the scratch once and run again on disk", got)
	}
	ls, _ := res.Images[0].Image.Layers()
	if f := layerFiles(t, ls[2])["small"]; f.Data != "small\n" {
		t.Errorf("/small: %+v", f)
	}
	big := layerFiles(t, ls[3])
	if len(big["big"].Data) != 6<<20 || big["after"].Data != "big\n" {
		t.Errorf("the step run again on disk gave /big of %d bytes and /after %q", len(big["big"].Data), big["after"].Data)
	}
	if f := layerFiles(t, ls[4])["both"]; f.Data != "small\nbig\n" {
		t.Errorf("/both: %q, want what the steps before wrote", f.Data)
	}
	res.Close()
	if left, _ := os.ReadDir(mem); len(left) != 0 {
		t.Errorf("the memory scratch holds %v after the build, want nothing (the dead build's folder too)", left)
	}
}

// progressLog collects every step's output.
type progressLog struct {
	mu sync.Mutex
	strings.Builder
}

func (p *progressLog) Step(string) assemble.ProgressStep { return p }
func (p *progressLog) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.Builder.Write(b)
}
func (p *progressLog) Warn(msg string) { p.Write([]byte(msg + "\n")) }
func (p *progressLog) Cached()         {}
func (p *progressLog) Done(error)      {}
