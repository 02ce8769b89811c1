package assemble_test

import (
	"os"
	"testing"

	"github.com/manifold-build/manifold/emulate"
)

func TestMain(m *testing.M) {
	emulate.Main() // RUN steps re-execute the test binary as the sandbox's init
	os.Exit(m.Run())
}
