package assemble_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/assemble/testkit"
	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/layers"
	"github.com/manifold-build/manifold/registry"
)

// offline refuses every request: a fuzzed FROM reaches no registry.
type offline struct{}

func (offline) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("no registry in a fuzz test")
}

// Any Dockerfile at all: parsing and building it (ARG and ENV expanded in
// every instruction; no registry, no sandbox) never panics, and every
// error it gives names the Dockerfile and, past parsing, its line.
func FuzzDockerfile(f *testing.F) {
	for _, pattern := range []string{"testdata/fuzz/dockerfile/*", "testdata/build/*/Dockerfile", "testdata/invalid/*/Dockerfile", "testdata/examples/*/Dockerfile"} {
		files, _ := filepath.Glob(filepath.Join(testkit.RepoRoot(), pattern))
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		df, err := assemble.Parse(strings.NewReader(string(data)), "Dockerfile")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "Dockerfile") {
				t.Fatalf("parse error without its place: %v", err)
			}
			return
		}
		_ = df
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := assemble.Build(context.Background(), assemble.Options{
			Context:   dir,
			Platforms: []platform.Platform{{OS: "linux", Architecture: "amd64"}},
			Registry:  registry.Options{Transport: offline{}, Retry: registry.Retry{Attempts: 1, Delay: 1, MaxDelay: 1}},
			Rootfs:    &layers.Cache{Dir: filepath.Join(dir, "rootfs")},
			WorkDir:   filepath.Join(dir, "work"),
		})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "Dockerfile:") {
				t.Fatalf("build error without its place: %v", err)
			}
			return
		}
		res.Close()
	})
}
