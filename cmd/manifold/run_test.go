package main

import (
	"archive/tar"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/assemble/testkit"
	"github.com/manifold-build/manifold/registry/registrytest"
)

var seedDir = filepath.Join(testkit.RepoRoot(), "testdata", "examples", "curl-example")

// The seed example end to end against the real registry: built and pushed
// for six platforms in one call, then run on each: manifold run prints what
// docker run --platform would.
func TestSeedExamplePushedThenRunOnEachPlatform(t *testing.T) {
	host, _ := registrytest.Distribution(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1.35", false)
	tag := host + "/demo/seed:1"
	code, stdout, stderr := manifold(t, "build", "--platform", strings.Join(assembletest.AllPlatforms, ","),
		"--build-arg", "BASE="+base.String(), "-t", tag, "--push", seedDir)
	if code != 0 {
		t.Fatalf("build: exit %d\n%s", code, stderr)
	}
	if !strings.HasPrefix(stdout, "sha256:") {
		t.Errorf("build printed %q, want the index digest", stdout)
	}
	for _, p := range assembletest.AllPlatforms {
		code, out, errOut := manifold(t, "run", "--platform", p, tag)
		if code != 0 || out != assembletest.Machine(p)+"\n" {
			t.Errorf("run --platform %s %s (its CMD cat /arch): exit %d, printed %q (%s); want %q", p, tag, code, out, errOut, assembletest.Machine(p))
		}
	}
	code, out, _ := manifold(t, "run", "--platform", "linux/arm64", tag, "uname", "-m")
	if code != 0 || out != "aarch64\n" {
		t.Errorf("run --platform linux/arm64 uname -m: exit %d, printed %q", code, out)
	}
	code, _, _ = manifold(t, "run", "--platform", "linux/arm64", tag, "sh", "-c", "exit 7")
	if code != 7 {
		t.Errorf("run ... sh -c 'exit 7' exited %d, want 7", code)
	}
}

// A failing RUN fails the build with its line and platform, and moves no
// tag: the one that was there still names the earlier image.
func TestFailingRunLeavesTagsAlone(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	good := contextDir(t, fmt.Sprintf("FROM %s\nRUN echo fine > /ok && echo hello from $(uname -m)\n", base))
	tag := host + "/app/x:1"
	code, stdout, stderr := manifold(t, "build", "--platform", "linux/amd64,linux/arm64", "-t", tag, "--push", good)
	if code != 0 {
		t.Fatalf("good build: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{"hello from aarch64", "hello from x86_64"} {
		if logged(stderr, want) != 1 {
			t.Errorf("build output lacks the step's line %q:\n%s", want, stderr)
		}
	}
	before := strings.TrimSpace(stdout)
	bad := contextDir(t, fmt.Sprintf("FROM %s\nENV A=1\nRUN test \"$(uname -m)\" = x86_64 || exit 3\n", base))
	code, _, stderr = manifold(t, "build", "--platform", "linux/amd64,linux/arm64", "-t", tag, "-t", host+"/app/x:new", "--push", bad)
	want := `Dockerfile:3: RUN test "$(uname -m)" = x86_64 || exit 3 [linux/arm64]: exit status 3`
	if code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("bad build: exit %d, stderr %q; want 1 and %q", code, stderr, want)
	}
	r, _ := name.ParseReference(tag)
	if d, err := remote.Head(r); err != nil || d.Digest.String() != before {
		t.Errorf("%s after a failed build: %v %v, want it still at %s", tag, d, err, before)
	}
	r, _ = name.ParseReference(host + "/app/x:new")
	if _, err := remote.Head(r); err == nil {
		t.Errorf("a failed build created the tag %s", r)
	}
}

// The whole build as an unprivileged user, with no binfmt_misc handler on
// the host for the foreign platform, leaves none behind: once for a user
// with an /etc/subuid range (newuidmap maps it), once for one without.
func TestRootlessBuildLeavesHostBinfmtAlone(t *testing.T) {
	testkit.Require(t, os.Geteuid() == 0, "root, to create the unprivileged users")
	testkit.LockHost(t, "binfmt")
	restore := disableHostQemu(t)
	defer restore()
	before := hostBinfmt(t)
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	for _, u := range []struct {
		name string
		args []string
	}{
		{"manifold-test", nil},
		{"manifold-nosub", []string{"-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"}},
	} {
		t.Run(u.name, func(t *testing.T) {
			if exec.Command("id", u.name).Run() == nil {
				exec.Command("userdel", "--remove", u.name).Run() // left by a run that was killed
			}
			args := append([]string{"--create-home", "--shell", "/bin/sh"}, append(u.args, u.name)...)
			if out, err := exec.Command("useradd", args...).CombinedOutput(); err != nil {
				t.Fatalf("useradd: %v\n%s", err, out)
			}
			t.Cleanup(func() {
				if out, err := exec.Command("userdel", "--remove", u.name).CombinedOutput(); err != nil {
					t.Errorf("userdel: %v\n%s", err, out)
				}
			})
			rootlessBuild(t, u.name, host, base.String(), u.args == nil)
		})
	}
	if after := hostBinfmt(t); after != before {
		t.Errorf("host binfmt_misc entries changed: before %q, after %q", before, after)
	}
}

func rootlessBuild(t *testing.T, user, host, base string, subIDs bool) {
	work, err := os.MkdirTemp("", "manifold-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(work)
	os.Chmod(work, 0o777)
	bin := filepath.Join(work, "manifold")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	asUser := func(args ...string) (string, error) {
		cmd := exec.Command("setpriv", append([]string{"--reuid=" + user, "--regid=" + user, "--init-groups", bin}, args...)...)
		cmd.Env = []string{"HOME=" + work, "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "MANIFOLD_STORE=" + filepath.Join(work, "store"),
			"XDG_CACHE_HOME=" + filepath.Join(work, "cache"), "TMPDIR=" + work}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	tag := host + "/rootless/" + user + ":1"
	if out, err := asUser("build", "--platform", "linux/amd64,linux/arm64", "--build-arg", "BASE="+base, "-t", tag, "--push", seedDir); err != nil {
		t.Fatalf("rootless build: %v\n%s", err, out)
	}
	checkRunLayerOwners(t, tag)
	if left, _ := filepath.Glob("/dev/shm/manifold-build-*"); len(left) > 0 {
		// Builds of other tests may be running: only this user's count.
		for _, d := range left {
			if fi, err := os.Stat(d); err == nil && fmt.Sprint(fi.Sys().(*syscall.Stat_t).Uid) == userID(t, user) {
				t.Errorf("the rootless build left %s in the memory scratch", d)
			}
		}
	}
	if subIDs {
		rootlessOwners(t, asUser, host, base)
	}
	for p, want := range map[string]string{"linux/amd64": "x86_64", "linux/arm64": "aarch64"} {
		out, err := asUser("run", "--platform", p, tag, "sh", "-c", "uname -m; stat -c %u:%g /arch /srv/www/index.html")
		if want := want + "\n0:0\n0:0\n"; err != nil || out != want {
			t.Errorf("rootless run --platform %s: %v, printed %q; want %q", p, err, out, want)
		}
	}
}

// hostBinfmt lists the host's binfmt_misc entries (mounting it if needed).
func hostBinfmt(t *testing.T) string {
	t.Helper()
	const dir = "/proc/sys/fs/binfmt_misc"
	if _, err := os.Stat(dir + "/register"); err != nil {
		if out, err := exec.Command("mount", "-t", "binfmt_misc", "binfmt_misc", dir).CombinedOutput(); err != nil {
			t.Fatalf("mounting the host's binfmt_misc to look at it: %v\n%s", err, out)
		}
	}
	var names []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		if e.Name() != "register" && e.Name() != "status" && strings.HasPrefix(string(data), "enabled") {
			names = append(names, e.Name())
		}
	}
	return strings.Join(names, " ")
}

// disableHostQemu turns off host handlers for arm64 for the test's length,
// so that the build must bring its own.
func disableHostQemu(t *testing.T) func() {
	hostBinfmt(t)
	var off []string
	entries, _ := os.ReadDir("/proc/sys/fs/binfmt_misc")
	for _, e := range entries {
		p := filepath.Join("/proc/sys/fs/binfmt_misc", e.Name())
		data, _ := os.ReadFile(p)
		if strings.HasPrefix(string(data), "enabled") && strings.Contains(string(data), "7f454c460201010000000000000000000200b700") {
			if os.WriteFile(p, []byte("0"), 0) == nil {
				off = append(off, p)
			}
		}
	}
	return func() {
		for _, p := range off {
			os.WriteFile(p, []byte("1"), 0)
		}
	}
}

// rootlessOwners builds, as a user with subordinate IDs, a step that changes
// a file another user owns in an earlier layer: the new layer keeps its
// owner (which takes unpacking layers as root of a user namespace).
func rootlessOwners(t *testing.T, asUser func(...string) (string, error), host, base string) {
	ctx, err := os.MkdirTemp("", "manifold-rootless-ctx-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(ctx)
	os.Chmod(ctx, 0o755)
	df := fmt.Sprintf("FROM %s\nCOPY --chown=app:staff owned /owned\nRUN echo y >> /owned\n", base)
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctx, "owned"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tag := host + "/rootless/owners:1"
	if out, err := asUser("build", "--platform", "linux/arm64", "-t", tag, "--push", ctx); err != nil {
		t.Fatalf("rootless build: %v\n%s", err, out)
	}
	r, _ := name.ParseReference(tag)
	img, err := remote.Image(r, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64"}))
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := img.Layers()
	rc, _ := ls[len(ls)-1].Uncompressed()
	defer rc.Close()
	tr := tar.NewReader(rc)
	found := false
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		if h.Name == "owned" {
			found = true
			if h.Uid != 1000 || h.Gid != 50 {
				t.Errorf("/owned is %d:%d in the RUN layer, want app:staff (1000:50)", h.Uid, h.Gid)
			}
		}
	}
	if !found {
		t.Errorf("the RUN layer lacks /owned")
	}
}

// checkRunLayerOwners reads each image's last layer from the registry: what
// the step's root made must be owned by 0:0, whatever host IDs it had.
func checkRunLayerOwners(t *testing.T, tag string) {
	t.Helper()
	r, _ := name.ParseReference(tag)
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := idx.IndexManifest()
	for _, d := range m.Manifests {
		img, _ := idx.Image(d.Digest)
		ls, _ := img.Layers()
		rc, err := ls[len(ls)-1].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		n := 0
		for h, err := tr.Next(); err == nil; h, err = tr.Next() {
			n++
			if h.Uid != 0 || h.Gid != 0 {
				t.Errorf("%s: %s owned by %d:%d in the layer, want 0:0", d.Platform.Architecture, h.Name, h.Uid, h.Gid)
			}
		}
		rc.Close()
		if n == 0 {
			t.Errorf("%s: empty RUN layer", d.Platform.Architecture)
		}
	}
}

// manifold run and inspect read an OCI layout as well as a registry.
func TestRunFromOCILayout(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	dir := filepath.Join(t.TempDir(), "layout")
	code, _, stderr := manifold(t, "build", "--platform", "linux/amd64,linux/arm64", "--build-arg", "BASE="+base.String(),
		"-t", "127.0.0.1:1/seed:1", "-o", "type=oci-layout,dest="+dir, seedDir)
	if code != 0 {
		t.Fatalf("build: exit %d\n%s", code, stderr)
	}
	for _, ref := range []string{"oci-layout://" + dir, "oci-layout://" + dir + ":1"} {
		code, out, errOut := manifold(t, "run", "--platform", "linux/arm64", ref)
		if code != 0 || out != "aarch64\n" {
			t.Errorf("run %s: exit %d, printed %q (%s)", ref, code, out, errOut)
		}
	}
	code, out, _ := manifold(t, "inspect", "oci-layout://"+dir)
	if code != 0 || !strings.Contains(out, "linux/arm64") {
		t.Errorf("inspect of the layout: exit %d\n%s", code, out)
	}
	if code, _, errOut := manifold(t, "run", "oci-layout://"+dir+":nope"); code != 1 || !strings.Contains(errOut, `no image named "nope"`) {
		t.Errorf("run of a missing tag: exit %d, %s", code, errOut)
	}
}

// manifold run uses the image's ENTRYPOINT, CMD, ENV, USER and WORKDIR as
// docker run --rm does, and its flags override them.
func TestRunUsesTheImageConfig(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/arm64")
	ctx := contextDir(t, fmt.Sprintf(`FROM %s
ENV GREETING=hello
USER app
WORKDIR /home/app
ENTRYPOINT ["sh", "-c", "echo $GREETING $(id -u) $(pwd) \"$@\"", "entry"]
CMD ["default"]
`, base))
	tag := host + "/app/cfg:1"
	if code, _, stderr := manifold(t, "build", "--platform", "linux/arm64", "-t", tag, "--push", ctx); code != 0 {
		t.Fatalf("build: exit %d\n%s", code, stderr)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "hello 1000 /home/app default\n"},
		{[]string{"given", "args"}, "hello 1000 /home/app given args\n"},
		{[]string{"-e", "GREETING=hi", "-u", "0", "-w", "/tmp", tag, "x"}, "hi 0 /tmp x\n"},
	} {
		args := append([]string{"run", "--platform", "linux/arm64"}, tc.args...)
		if len(tc.args) == 0 || tc.args[0] != "-e" {
			args = append([]string{"run", "--platform", "linux/arm64", tag}, tc.args...)
		}
		code, out, errOut := manifold(t, args...)
		if code != 0 || out != tc.want {
			t.Errorf("manifold %v: exit %d, printed %q (%s); want %q", args[1:], code, out, errOut, tc.want)
		}
	}
}

// userID is the numeric ID of a user of this machine.
func userID(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("id", "-u", name).Output()
	if err != nil {
		t.Fatalf("id -u %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}
