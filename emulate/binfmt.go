package emulate

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/manifold-build/manifold/emulate/platform"
)

// binfmtDir is where the host's binfmt_misc is mounted.
const binfmtDir = "/proc/sys/fs/binfmt_misc"

// interpreter finds the host's qemu-user-static binary for emu: in qemuDir
// when given, else on PATH. Debian's qemu takes the P flag (keep argv[0])
// only when called through its <name>-binfmt-P link, so that link is
// preferred where it exists.
func interpreter(emu emulator, p platform.Platform, qemuDir string) (string, error) {
	name := "qemu-" + emu.qemu + "-static"
	var path string
	if qemuDir != "" {
		path = filepath.Join(qemuDir, name)
		if _, err := os.Stat(path); err != nil {
			path = ""
		}
	} else if found, err := exec.LookPath(name); err == nil {
		path = found
	}
	if path == "" {
		where := "on PATH"
		if qemuDir != "" {
			where = "in " + qemuDir
		}
		return "", fmt.Errorf("running %s needs %s, not found %s: apt-get install qemu-user-static", p, name, where)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	linkP := filepath.Join("/usr/libexec/qemu-binfmt", emu.qemu+"-binfmt-P")
	if target, err := filepath.EvalSymlinks(linkP); err == nil {
		if real, err := filepath.EvalSymlinks(abs); err == nil && real == target {
			return linkP, nil
		}
	}
	return abs, nil
}

// registration is the line written to binfmt_misc's register file: match
// by magic, flags P (keep argv[0]: busybox applets need it) and F (open the
// interpreter now, so nothing is copied into the root filesystem).
func registration(name string, emu emulator, interp string) string {
	return fmt.Sprintf(":%s:M::%s:%s:%s:PF", name, emu.magic, emu.mask, interp)
}

// privateBinfmt tells whether this kernel gives each user namespace its
// own binfmt_misc instance (Linux 6.7 and later).
func privateBinfmt() bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	return major > 6 || major == 6 && minor >= 7
}

// hostHandler finds an enabled handler in the host's binfmt_misc whose
// magic is emu's: another tool's registration that already serves the
// platform. Only one with flag F works inside a new root.
func hostHandler(emu emulator) (string, bool) {
	entries, err := os.ReadDir(binfmtDir)
	if err != nil {
		return "", false
	}
	magic := strings.ReplaceAll(strings.ToLower(emu.magic), `\x`, "")
	for _, e := range entries {
		if e.Name() == "register" || e.Name() == "status" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(binfmtDir, e.Name()))
		if err != nil {
			continue
		}
		text := string(data)
		if strings.HasPrefix(text, "enabled") && strings.Contains(text, "magic "+magic+"\n") && flagsHave(text, 'F') {
			return e.Name(), true
		}
	}
	return "", false
}

func flagsHave(entry string, flag rune) bool {
	for _, line := range strings.Split(entry, "\n") {
		if f, ok := strings.CutPrefix(line, "flags: "); ok {
			return strings.ContainsRune(f, flag)
		}
	}
	return false
}

// hostRegister registers emu in the host's binfmt_misc under a name of its
// own (pid and a random part: parallel steps register apart) and returns a
// function that removes it. Root only.
func hostRegister(emu emulator, interp string) (func(), error) {
	if _, err := os.Stat(filepath.Join(binfmtDir, "register")); errors.Is(err, fs.ErrNotExist) {
		if err := unix.Mount("binfmt_misc", binfmtDir, "binfmt_misc", 0, ""); err != nil {
			return nil, fmt.Errorf("mounting host binfmt_misc: %w", err)
		}
	}
	var nonce [4]byte
	rand.Read(nonce[:])
	name := fmt.Sprintf("manifold-%d-%x-%s", os.Getpid(), nonce, emu.qemu)
	if err := os.WriteFile(filepath.Join(binfmtDir, "register"), []byte(registration(name, emu, interp)), 0); err != nil {
		return nil, fmt.Errorf("registering %s in the host's binfmt_misc: %w", name, err)
	}
	return func() { os.WriteFile(filepath.Join(binfmtDir, name), []byte("-1"), 0) }, nil
}
