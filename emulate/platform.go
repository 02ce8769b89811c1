package emulate

import (
	"fmt"
	"runtime"
)

// Platform is a Linux platform as OCI names it: GOARCH names, arm variants.
type Platform struct {
	Arch    string // amd64, arm64, arm, 386, ppc64le, s390x, riscv64, mips64le
	Variant string // v7, v6 (arm); v8 (arm64) or "" otherwise
}

func (p Platform) String() string {
	if p.Variant == "" || p.Arch == "arm64" && p.Variant == "v8" {
		return "linux/" + p.Arch
	}
	return "linux/" + p.Arch + "/" + p.Variant
}

// emulator says how a platform's binaries run: its qemu name and the ELF
// header that binfmt_misc recognises them by (magic and mask, as Debian's
// qemu-user-static registers them).
type emulator struct {
	qemu  string // qemu-<name>-static
	magic string
	mask  string
}

const (
	elfMask32  = `\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff`
	elfMaskX86 = `\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff`
)

// emulators is the one table of platforms manifold can emulate.
var emulators = map[string]emulator{
	"amd64":    {"x86_64", `\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00`, elfMaskX86},
	"386":      {"i386", `\x7f\x45\x4c\x46\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x03\x00`, elfMaskX86},
	"arm64":    {"aarch64", `\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00`, elfMask32},
	"arm":      {"arm", `\x7f\x45\x4c\x46\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00`, elfMask32},
	"ppc64le":  {"ppc64le", `\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x15\x00`, `\xff\xff\xff\xff\xff\xff\xff\xfc\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\x00`},
	"s390x":    {"s390x", `\x7f\x45\x4c\x46\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16`, `\xff\xff\xff\xff\xff\xff\xff\xfc\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff`},
	"riscv64":  {"riscv64", `\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xf3\x00`, elfMask32},
	"mips64le": {"mips64el", `\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x08\x00`, `\xff\xff\xff\xff\xff\xff\xff\x00\xfe\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff`},
}

// perLinux32 is the personality that makes uname report a 32-bit machine
// (i686 on amd64), as linux32 and Docker do.
const perLinux32 = 0x0008

// execution says how a platform runs on this host.
type execution struct {
	native      bool
	personality int      // set before the command when not 0
	emu         emulator // when not native
}

// plan decides how p runs on the host architecture host.
func plan(host string, p Platform) (execution, error) {
	switch {
	case p.Arch == host:
		return execution{native: true}, nil
	case host == "amd64" && p.Arch == "386":
		return execution{native: true, personality: perLinux32}, nil
	}
	emu, ok := emulators[p.Arch]
	if !ok {
		return execution{}, fmt.Errorf("no emulator known for %s", p)
	}
	return execution{emu: emu}, nil
}

// hostArch is the architecture this binary runs on.
func hostArch() string { return runtime.GOARCH }
