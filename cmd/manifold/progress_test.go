package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tonistiigi/vt100"
	"golang.org/x/sys/unix"

	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/assemble/testkit"
	"github.com/manifold-build/manifold/registry/registrytest"
)

const progressDockerfile = `FROM %s
COPY hello.txt /
RUN echo "built on $(uname -m)" > /built && cat /built
`

// --progress plain is BuildKit's: a start and an end line for every step
// of every platform, the step's output numbered as it; quiet prints the
// digest and nothing else.
func TestProgressPlainAndQuiet(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	ctx := contextDir(t, fmt.Sprintf(progressDockerfile, base))
	code, out, errOut := manifold(t, "build", "--progress", "plain", "--platform", twoPlatforms, "-t", host+"/app/p:1", "--push", ctx)
	if code != 0 {
		t.Fatalf("build: %d %s", code, errOut)
	}
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		for i, step := range []string{"1/3] FROM ", "2/3] COPY hello.txt /", "3/3] RUN echo"} {
			name := fmt.Sprintf("[%s stage-0 %s", p, step)
			if n := countSteps(errOut, name, "DONE"); n != 1 {
				t.Errorf("step %d of %s: %d started-and-DONE steps named %q, want 1", i+1, p, n, name)
			}
		}
	}
	if logged(errOut, "built on x86_64") != 1 || logged(errOut, "built on aarch64") != 1 {
		t.Errorf("the RUN's output is not its step's:\n%s", errOut)
	}
	if countSteps(errOut, "exporting to image", "DONE") != 1 || !strings.Contains(errOut, "pushing layers ") {
		t.Errorf("no export step with the push's bytes:\n%s", errOut)
	}
	if !strings.HasPrefix(out, "sha256:") {
		t.Errorf("stdout %q, want the digest", out)
	}
	// Again: every step CACHED (the FROM is done).
	_, _, errOut = manifold(t, "build", "--progress", "plain", "--platform", twoPlatforms, ctx)
	if n := countSteps(errOut, "RUN echo", "CACHED"); n != 2 {
		t.Errorf("%d cached RUN steps, want 2:\n%s", n, errOut)
	}
	code, out, errOut = manifold(t, "build", "--progress", "quiet", "--platform", twoPlatforms, "-t", host+"/app/p:2", "--push", ctx)
	if code != 0 || errOut != "" || len(strings.TrimSpace(out)) != len("sha256:")+64 {
		t.Errorf("quiet: exit %d, stdout %q, stderr %q; want the digest alone", code, out, errOut)
	}
}

// openPTY opens a pseudo-terminal of rows×cols: its controller and the
// terminal a child gets.
func openPTY(t *testing.T, rows, cols int) (*os.File, *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	testkit.Require(t, err == nil, "pseudo-terminals (/dev/ptmx): %v", err)
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(pts.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(rows), Col: uint16(cols)}); err != nil {
		t.Fatal(err)
	}
	return ptmx, pts
}

// The live view under a pseudo-terminal: the final screen, as a terminal
// shows it once every redraw is done, has the header and every step of
// both platforms with its timer, and no step still running.
func TestProgressTTY(t *testing.T) {
	host, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	ctx := contextDir(t, fmt.Sprintf(progressDockerfile, base))
	bin := buildManifold(t, t.TempDir())
	const rows, cols = 60, 120
	ptmx, pts := openPTY(t, rows, cols)
	defer ptmx.Close()
	var stdout bytes.Buffer
	work := t.TempDir()
	cmd := exec.Command(bin, "build", "--platform", twoPlatforms, "-t", host+"/app/tty:1", "--push", ctx)
	cmd.Stdout, cmd.Stderr = &stdout, pts
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+filepath.Join(work, "cache"), "MANIFOLD_STORE="+filepath.Join(work, "store"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pts.Close()
	var screen bytes.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&screen, ptmx); close(copied) }()
	err := cmd.Wait()
	ptmx.SetReadDeadline(timeNowPlus(2))
	<-copied
	if err != nil {
		t.Fatalf("build: %v\n%s", err, screen.String())
	}
	raw := screen.String()
	if !strings.Contains(raw, "\x1b[") {
		t.Errorf("no escape sequences on a terminal: not the live view:\n%s", raw)
	}
	term := vt100.NewVT100(rows, cols)
	term.Write(screen.Bytes())
	var lines []string
	for _, l := range term.Content {
		lines = append(lines, strings.TrimRight(string(l), " \x00"))
	}
	final := strings.Join(lines, "\n")
	if !strings.Contains(final, "[+] Finished") || strings.Count(final, "[+] ") != 1 {
		t.Errorf("the final screen has no single finished header:\n%s\nraw: %q", final, raw)
	}
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		for _, step := range []string{"1/3] FROM", "2/3] COPY hello.txt", "3/3] RUN echo"} {
			name := fmt.Sprintf("=> [%s stage-0 %s", p, step)
			found := false
			for _, l := range lines {
				if strings.Contains(l, name) && strings.HasSuffix(l, "s") {
					found = true
				}
			}
			if !found {
				t.Errorf("the final screen lacks %q with its timer:\n%s", name, final)
			}
		}
	}
	if !strings.HasPrefix(stdout.String(), "sha256:") || strings.Contains(stdout.String(), "\x1b") {
		t.Errorf("stdout (not a terminal) %q, want the digest, no escape codes", stdout.String())
	}
}

func timeNowPlus(seconds int) time.Time { return time.Now().Add(time.Duration(seconds) * time.Second) }

// --progress rawjson: a JSON object per event, every step started and
// ended.
func TestProgressRawJSON(t *testing.T) {
	ctx := contextDir(t, "FROM scratch\nCOPY hello.txt /\n")
	code, _, errOut := manifold(t, "build", "--progress", "rawjson", ctx)
	if code != 0 {
		t.Fatalf("build: %d %s", code, errOut)
	}
	events := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(errOut), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("not a JSON line: %q", line)
		}
		events[fmt.Sprint(ev["event"])]++
	}
	if events["start"] != 3 || events["done"] != 3 {
		t.Errorf("events %v, want 3 steps (FROM, COPY, export) started and done", events)
	}
}
