package platform

import (
	"os"
	"path/filepath"
	"testing"
)

// Parse never panics, and what it accepts is normalised: formatting and
// parsing again gives the same platform, and it matches its OCI form.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "fuzz", "platform", "*"))
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(p.String())
		if err != nil || again != p {
			t.Fatalf("Parse(%q) = %v, but Parse(%q) = %v, %v", s, p, p.String(), again, err)
		}
		if !p.Matches(p.OCI()) {
			t.Fatalf("%v does not match its own OCI form %+v", p, p.OCI())
		}
		if FromOCI(p.OCI()) != p {
			t.Fatalf("%v comes back from OCI as %v", p, FromOCI(p.OCI()))
		}
	})
}
