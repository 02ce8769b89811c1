package platform

// The platforms manifold knows how to run, and what runs them.
var machines = map[string]struct {
	qemu    string // qemu-<qemu>-static runs it
	machine string // what uname -m says under that qemu
}{
	"amd64":    {"x86_64", "x86_64"},
	"386":      {"i386", "i686"},
	"arm64":    {"aarch64", "aarch64"},
	"arm":      {"arm", "armv7l"},
	"ppc64le":  {"ppc64le", "ppc64le"},
	"s390x":    {"s390x", "s390x"},
	"riscv64":  {"riscv64", "riscv64"},
	"mips64le": {"mips64el", "mips64"},
	"loong64":  {"loongarch64", "loongarch64"},
}

// Qemu is the qemu-user-static name of p's architecture ("aarch64" for
// arm64: the binary is qemu-aarch64-static); ok is false when manifold
// knows no emulator for it.
func (p Platform) Qemu() (name string, ok bool) {
	m, ok := machines[p.Architecture]
	return m.qemu, ok
}

// Machine is what uname -m says on p under qemu-user-static 7.2 (and
// natively on amd64 for amd64 and 386). qemu's default arm CPU is an ARMv7
// one, so arm/v6 says armv7l, as it does under buildx's binfmt handlers;
// the kernel calls mips64le "mips64".
func (p Platform) Machine() string { return machines[p.Architecture].machine }

// Known lists the platforms manifold runs, in a stable order: every one of
// them has a qemu-user-static emulator in Debian (and in tonistiigi/binfmt).
func Known() []Platform {
	return []Platform{
		{"linux", "amd64", ""}, {"linux", "arm64", "v8"}, {"linux", "arm", "v7"},
		{"linux", "arm", "v6"}, {"linux", "ppc64le", ""}, {"linux", "s390x", ""},
		{"linux", "386", ""}, {"linux", "riscv64", ""}, {"linux", "mips64le", ""},
		{"linux", "loong64", ""},
	}
}
