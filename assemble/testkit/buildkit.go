package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BuildKitd is BuildKit's daemon (v0.34.2, the engine of docker buildx),
// run for a test: the reference for Dockerfile semantics.
type BuildKitd struct {
	ctl, addr string
}

// BuildKit starts buildkitd with the OCI worker (runc, overlayfs), trusting
// registry (host:port) over plain HTTP, for the rest of the test. The
// binaries come from testdata/scripts/buildkit ($MANIFOLD_BUILDKIT, default
// /var/cache/manifold-buildkit).
func BuildKit(t testing.TB, registry string) *BuildKitd {
	t.Helper()
	RequireRoot(t, "to run buildkitd")
	dir := os.Getenv("MANIFOLD_BUILDKIT")
	if dir == "" {
		dir = "/var/cache/manifold-buildkit"
	}
	_, err1 := os.Stat(filepath.Join(dir, "buildkitd"))
	_, err2 := exec.LookPath("runc")
	Require(t, err1 == nil && err2 == nil, "BuildKit in %s (testdata/scripts/buildkit) and runc (apt-get install runc)", dir)
	work, err := os.MkdirTemp("", "manifold-buildkitd-")
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("[worker.oci]\n  enabled = true\n  snapshotter = \"overlayfs\"\n[worker.containerd]\n  enabled = false\n[registry.%q]\n  http = true\n", registry)
	os.WriteFile(filepath.Join(work, "buildkitd.toml"), []byte(cfg), 0o644)
	bk := &BuildKitd{ctl: filepath.Join(dir, "buildctl"), addr: "unix://" + filepath.Join(work, "sock")}
	log, _ := os.Create(filepath.Join(work, "log"))
	cmd := exec.Command(filepath.Join(dir, "buildkitd"), "--config", filepath.Join(work, "buildkitd.toml"),
		"--root", filepath.Join(work, "root"), "--addr", bk.addr)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting buildkitd: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
		exec.Command("sh", "-c", "grep "+work+" /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r umount").Run()
		os.RemoveAll(work)
	})
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if exec.Command(bk.ctl, "--addr", bk.addr, "debug", "workers").Run() == nil {
			return bk
		}
	}
	data, _ := os.ReadFile(filepath.Join(work, "log"))
	t.Fatalf("buildkitd did not start:\n%s", data)
	return nil
}

// Build builds the Dockerfile in dir for platforms with build args, into an
// OCI image layout tarball, and returns its path.
func (bk *BuildKitd) Build(t testing.TB, dir string, platforms []string, args map[string]string) (string, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "oci.tar")
	argv := []string{"--addr", bk.addr, "build", "--frontend", "dockerfile.v0",
		"--local", "context=" + dir, "--local", "dockerfile=" + dir,
		"--opt", "platform=" + strings.Join(platforms, ","),
		"--output", "type=oci,dest=" + out}
	for k, v := range args {
		argv = append(argv, "--opt", "build-arg:"+k+"="+v)
	}
	if res, err := exec.Command(bk.ctl, argv...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("buildctl: %v\n%s", err, res)
	}
	return out, nil
}

// HostQemu makes sure the host's binfmt_misc has a handler for the qemu
// architecture arch (Debian's qemu-user-static registration, under a name
// of the test's), for tools such as BuildKit that need one, and removes it
// with the test. It holds the host's binfmt lock meanwhile.
func HostQemu(t testing.TB, arch string) {
	t.Helper()
	RequireRoot(t, "to register in the host's binfmt_misc")
	LockHost(t, "binfmt")
	conf, err := os.ReadFile("/usr/lib/binfmt.d/qemu-" + arch + ".conf")
	Require(t, err == nil, "Debian's qemu-user-static registration for %s", arch)
	if _, err := os.Stat("/proc/sys/fs/binfmt_misc/register"); err != nil {
		// Not mounted (a fresh machine without systemd): mount it for the
		// test, and take it away again after.
		if err := unix.Mount("binfmt_misc", "/proc/sys/fs/binfmt_misc", "binfmt_misc", 0, ""); err != nil {
			t.Fatalf("mounting binfmt_misc: %v", err)
		}
		t.Cleanup(func() { unix.Unmount("/proc/sys/fs/binfmt_misc", 0) })
	}
	handlers, _ := filepath.Glob("/proc/sys/fs/binfmt_misc/*")
	for _, h := range handlers {
		if data, _ := os.ReadFile(h); strings.Contains(string(data), "qemu-"+arch) || strings.Contains(string(data), arch+"-binfmt") {
			if strings.HasPrefix(string(data), "enabled") {
				return
			}
		}
	}
	name := "manifold-test-" + arch
	line := strings.Replace(strings.TrimSpace(string(conf)), ":qemu-"+arch+":", ":"+name+":", 1)
	if err := os.WriteFile("/proc/sys/fs/binfmt_misc/register", []byte(line), 0); err != nil {
		t.Fatalf("registering %s: %v", name, err)
	}
	t.Cleanup(func() { os.WriteFile("/proc/sys/fs/binfmt_misc/"+name, []byte("-1"), 0) })
}
