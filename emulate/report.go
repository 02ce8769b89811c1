package emulate

import "github.com/manifold-build/manifold/emulate/platform"

// Support is how this host runs each platform manifold knows: natively,
// through which qemu binary, or not at all (and why); and whether the
// kernel gives a user namespace a binfmt_misc of its own.
type Support struct {
	PrivateBinfmt bool
	Platforms     []PlatformSupport
}

// PlatformSupport is how one platform runs here.
type PlatformSupport struct {
	Platform platform.Platform
	Native   bool
	Emulator string // the qemu binary, when not native
	Missing  string // why it cannot run, "" when it can
}

// Check reports how this host runs every known platform, looking for qemu
// in qemuDir (default: PATH). It runs nothing.
func Check(qemuDir string) Support {
	s := Support{PrivateBinfmt: privateBinfmt()}
	host := platform.Host()
	for _, p := range platform.Known() {
		ps := PlatformSupport{Platform: p}
		ex, err := plan(host, p)
		switch {
		case err != nil:
			ps.Missing = err.Error()
		case ex.native:
			ps.Native = true
		default:
			if ps.Emulator, err = interpreter(ex.emu, p, qemuDir); err != nil {
				ps.Missing = err.Error()
			}
		}
		s.Platforms = append(s.Platforms, ps)
	}
	return s
}
