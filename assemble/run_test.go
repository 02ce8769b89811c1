package assemble_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/assemble/testkit"
	"github.com/manifold-build/manifold/emulate"
	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/layers"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// withSandbox runs RUN steps in the real sandbox.
func withSandbox(o *assemble.Options) { o.Runner = &emulate.Sandbox{} }

func lastLayer(t *testing.T, img v1.Image) map[string]fileInfo {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return layerFiles(t, ls[len(ls)-1])
}

// The seed example on six platforms in one build: each RUN layer holds its
// platform's uname -m, and the base file and directory it removed become
// whiteouts.
func TestSeedExampleOnSixPlatforms(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false)
	ctxDir := filepath.Join(testkit.RepoRoot(), "testdata", "examples", "curl-example")
	res := mustBuild(t, ctxDir, assembletest.AllPlatforms, func(o *assemble.Options) {
		withSandbox(o)
		o.BuildArgs = map[string]string{"BASE": base.String()}
	})
	if len(res.Images) != 6 {
		t.Fatalf("%d images, want 6", len(res.Images))
	}
	for _, pi := range res.Images {
		p := platform.FromOCI(pi.Platform).String()
		files := lastLayer(t, pi.Image)
		if got := files["arch"].Data; got != assembletest.Machine(p)+"\n" {
			t.Errorf("%s: /arch in the RUN layer holds %q, want %q", p, got, assembletest.Machine(p)+"\n")
		}
		for _, wh := range []string{"etc/.wh.group", "root/", "root/.made-by-run"} {
			if _, ok := files[wh]; !ok {
				t.Errorf("%s: RUN layer lacks %s", p, wh)
			}
		}
		if _, ok := files["root/.wh..wh..opq"]; ok {
			t.Errorf("%s: /root, made again over an empty one, has an opaque marker; BuildKit lists what it hides instead: nothing", p)
		}
		for name := range files {
			kept := name == "proc/" || name == "dev/" || name == "sys/" // empty, as BuildKit's steps leave them
			if !kept && (strings.HasPrefix(name, "proc") || strings.HasPrefix(name, "dev") || strings.HasPrefix(name, "sys") ||
				strings.Contains(name, "resolv.conf") || strings.Contains(name, "hosts")) {
				t.Errorf("%s: the sandbox's mount point %s leaked into the layer", p, name)
			}
		}
	}
}

// USER, WORKDIR, ENV and ARG reach the command; ARGs stay out of the image.
func TestRunSeesUserWorkdirEnvAndArgs(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/arm64")
	ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf(`FROM %s
ARG GREETING=hi
ENV FOO=bar
USER app
WORKDIR /home/app/work
RUN echo "$GREETING $FOO $(id -u):$(id -g) $(id -G) $(pwd) $HOME" > out.txt
RUN --network=none cat /proc/net/dev | grep -c : > /home/app/work/ifaces
USER root
RUN true
`, base)})
	res := mustBuild(t, ctxDir, []string{"linux/arm64"}, withSandbox)
	img := res.Images[0].Image
	ls, _ := img.Layers()
	if len(ls) != 5 {
		t.Fatalf("%d layers, want the base's 2, WORKDIR's and one for each RUN that changed something", len(ls))
	}
	if d := layerFiles(t, ls[2])["home/app/work/"]; d.UID != 1000 || d.GID != 1000 {
		t.Errorf("WORKDIR made /home/app/work owned %d:%d, want USER app's 1000:1000", d.UID, d.GID)
	}
	out := layerFiles(t, ls[3])["home/app/work/out.txt"]
	if want := "hi bar 1000:1000 1000 50 /home/app/work /home/app\n"; out.Data != want || out.UID != 1000 || out.GID != 1000 {
		t.Errorf("out.txt = %q owned %d:%d, want %q owned 1000:1000", out.Data, out.UID, out.GID, want)
	}
	if got := layerFiles(t, ls[4])["home/app/work/ifaces"].Data; got != "1\n" {
		t.Errorf("RUN --network=none saw %q interfaces, want only lo", got)
	}
	cf, _ := img.ConfigFile()
	for _, kv := range cf.Config.Env {
		if strings.HasPrefix(kv, "GREETING=") {
			t.Errorf("ARG GREETING was kept in the image's env")
		}
	}
	h := cf.History[len(cf.History)-1]
	if !h.EmptyLayer || !strings.Contains(h.CreatedBy, "true") {
		t.Errorf("RUN true: history %+v, want an empty layer", h)
	}
}

// A failing RUN fails the build at its line, with its platform.
func TestFailingRunNamesLineAndPlatform(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/arm64")
	ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf("FROM %s\nENV A=1\nRUN echo about to fail; exit 3\n", base)})
	_, err := build(t, ctxDir, []string{"linux/arm64"}, withSandbox)
	want := "Dockerfile:3: RUN echo about to fail; exit 3 [linux/arm64]: exit status 3"
	if err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
}

// Overlay capture and the walk-and-compare fallback give layers that
// unpack to the same tree.
func TestOverlayAndWalkCaptureAgree(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf(`FROM %s
RUN rm /etc/group && rm -rf /usr/sbin && mkdir /usr/sbin && echo new > /usr/sbin/only && uname -m > /arch && ln /arch /arch-link && chmod 4755 /arch
RUN rm /arch-link && mkdir -p /a/b/c && echo x > /a/b/c/x && ln -s /a/b /a/link
`, base)})
	trees := func(walk bool) []string {
		res := mustBuild(t, ctxDir, []string{"linux/amd64", "linux/arm64"}, func(o *assemble.Options) {
			withSandbox(o)
			o.WalkCapture = walk
		})
		var out []string
		for _, pi := range res.Images {
			out = append(out, tree(t, pi.Image))
		}
		return out
	}
	overlay, walk := trees(false), trees(true)
	for i := range overlay {
		if overlay[i] != walk[i] {
			t.Errorf("image %d unpacks differently:\noverlay %s\nwalk    %s", i, overlay[i], walk[i])
		}
	}
	for _, want := range []string{"arch 4755", "usr/sbin/only", "a/link -> /a/b"} {
		if !strings.Contains(overlay[1], want) {
			t.Errorf("tree lacks %q:\n%s", want, overlay[1])
		}
	}
	if strings.Contains(overlay[1], "etc/group") || strings.Contains(overlay[1], "usr/sbin/httpd") || strings.Contains(overlay[1], "arch-link") {
		t.Errorf("deleted files are still there:\n%s", overlay[1])
	}
}

// tree unpacks an image and lists its files: name, mode, size, link.
func tree(t *testing.T, img v1.Image) string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := layers.Unpack(context.Background(), dir, ls); err != nil {
		t.Fatal(err)
	}
	var lines []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, _ := d.Info()
		rel, _ := filepath.Rel(dir, p)
		line := fmt.Sprintf("%s %o %d", rel, fi.Sys().(*syscall.Stat_t).Mode&0o7777, fi.Size())
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			line = rel + " -> " + target
		}
		lines = append(lines, line)
		return nil
	})
	return strings.Join(lines, "\n")
}

// countingRunner records what each RUN ran on.
type countingRunner struct {
	assemble.Runner
	mu   sync.Mutex
	runs []run
}

type run struct {
	platform, emulator, cmd string
}

func (c *countingRunner) Run(ctx context.Context, spec emulate.Spec) (*emulate.Result, error) {
	res, err := c.Runner.Run(ctx, spec)
	if res != nil {
		c.mu.Lock()
		c.runs = append(c.runs, run{spec.Platform.String(), res.Emulator, strings.Join(spec.Argv, " ")})
		c.mu.Unlock()
	}
	return res, err
}

// The cross-compile pattern: a --platform=$BUILDPLATFORM stage that uses no
// TARGET* argument runs once per build, one that uses $TARGETARCH once per
// target, and neither starts qemu.
func TestBuildPlatformStagesRunNativelyAndShared(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64", "linux/s390x")
	ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf(`FROM --platform=$BUILDPLATFORM %[1]s AS tools
RUN uname -m > /tools-arch

FROM --platform=$BUILDPLATFORM %[1]s AS cross
ARG TARGETARCH
RUN echo "$TARGETARCH from $(uname -m)" > /cross

FROM %[1]s
COPY --from=tools /tools-arch /
COPY --from=cross /cross /
RUN cat /tools-arch /cross > /both
`, base)})
	cr := &countingRunner{Runner: &emulate.Sandbox{}}
	res := mustBuild(t, ctxDir, []string{"linux/amd64", "linux/arm64", "linux/s390x"}, func(o *assemble.Options) { o.Runner = cr })
	hostArch := platform.Host().String()
	count := map[string]int{}
	for _, r := range cr.runs {
		switch {
		case strings.Contains(r.cmd, "/tools-arch") && !strings.Contains(r.cmd, "/both"):
			count["tools"]++
		case strings.Contains(r.cmd, "/cross") && !strings.Contains(r.cmd, "/both"):
			count["cross"]++
		default:
			continue
		}
		if r.platform != hostArch || r.emulator != "" {
			t.Errorf("%q ran on %s with emulator %q, want natively on %s", r.cmd, r.platform, r.emulator, hostArch)
		}
	}
	if count["tools"] != 1 || count["cross"] != 3 {
		t.Errorf("tools stage ran %d times (want 1), cross stage %d times (want 3)", count["tools"], count["cross"])
	}
	for _, pi := range res.Images {
		want := fmt.Sprintf("x86_64\n%s from x86_64\n", pi.Platform.Architecture)
		if got := lastLayer(t, pi.Image)["both"].Data; got != want {
			t.Errorf("%s: /both = %q, want %q", platform.FromOCI(pi.Platform).String(), got, want)
		}
	}
}

// More RUN steps than one page of overlay options can name still build:
// the stack goes to the kernel a directory at a time.
func TestManyRunSteps(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64")
	var df strings.Builder
	fmt.Fprintf(&df, "FROM %s\n", base)
	const steps = 80
	for i := range steps {
		fmt.Fprintf(&df, "RUN echo %d > /step-%02d\n", i, i)
	}
	fmt.Fprintf(&df, "RUN ls /step-* | wc -l > /count\n")
	ctxDir := writeContext(t, map[string]string{"Dockerfile": df.String()})
	res := mustBuild(t, ctxDir, []string{"linux/amd64"}, func(o *assemble.Options) {
		withSandbox(o)
		o.WorkDir = filepath.Join(t.TempDir(), strings.Repeat("long-directory-name-", 4))
	})
	if got := lastLayer(t, res.Images[0].Image)["count"].Data; got != fmt.Sprintf("%d\n", steps) {
		t.Errorf("the last step saw %q files, want %d", got, steps)
	}
}

// A RUN in shell form goes through the stage's SHELL.
func TestRunShellFormUsesShell(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/arm64")
	ctxDir := writeContext(t, map[string]string{"Dockerfile": fmt.Sprintf(`FROM %s
RUN echo $0 > /default-shell
SHELL ["/bin/ash", "-c"]
RUN echo $0 > /ash
RUN ["/bin/sh", "-c", "echo exec form > /exec"]
`, base)})
	res := mustBuild(t, ctxDir, []string{"linux/arm64"}, withSandbox)
	ls, _ := res.Images[0].Image.Layers()
	for i, want := range map[int][2]string{2: {"default-shell", "/bin/sh\n"}, 3: {"ash", "/bin/ash\n"}, 4: {"exec", "exec form\n"}} {
		if got := layerFiles(t, ls[i])[want[0]].Data; got != want[1] {
			t.Errorf("/%s = %q, want %q", want[0], got, want[1])
		}
	}
}

// A RUN after a COPY into a directory an earlier RUN gave to a user sees
// the directory still the user's: unpacking the COPY's layer, which names
// only the file, invents no owner for its parents.
func TestCopyIntoUsersHomeKeepsItsOwner(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64")
	ctxDir := writeContext(t, map[string]string{
		"Dockerfile": fmt.Sprintf("FROM %s\nRUN mkdir -p /home/app && chown 1000:1000 /home/app && chmod 700 /home/app\nCOPY --chown=1000 x.txt /home/app/\nUSER 1000\nRUN touch /home/app/made-by-app\n", base),
		"x.txt":      "x\n",
	})
	res := mustBuild(t, ctxDir, []string{"linux/amd64"}, withSandbox)
	files := lastLayer(t, res.Images[0].Image)
	if f, ok := files["home/app/made-by-app"]; !ok || f.UID != 1000 {
		t.Errorf("the last RUN's layer holds %v, want home/app/made-by-app owned by 1000", files)
	}
}
