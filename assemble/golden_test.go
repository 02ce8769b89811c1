package assemble_test

import (
	"archive/tar"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/emulate/platform"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/build and testdata/invalid")

// caseOptions is a golden case's optional build.json.
type caseOptions struct {
	Platforms []string          `json:"platforms"`
	BuildArgs map[string]string `json:"buildArgs"`
	Target    string            `json:"target"`
	Labels    map[string]string `json:"labels"`
	// Context names another case's folder to build, so that cases that
	// differ only in options share one Dockerfile.
	Context string `json:"context"`
}

// eachCase runs fn for every folder of testdata/<kind>, with its options
// and the context to build.
func eachCase(t *testing.T, kind string, fn func(t *testing.T, dir, ctxDir string, co caseOptions)) {
	cases, _ := filepath.Glob(filepath.Join("..", "testdata", kind, "*"))
	if len(cases) == 0 {
		t.Fatalf("no %s cases found", kind)
	}
	for _, dir := range cases {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			co := caseOptions{Platforms: []string{"linux/amd64", "linux/arm64"}}
			data, err := os.ReadFile(filepath.Join(dir, "build.json"))
			if err == nil {
				err = json.Unmarshal(data, &co)
			}
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			fn(t, dir, filepath.Join(dir, co.Context), co)
		})
	}
}

func (co caseOptions) apply(o *assemble.Options) {
	o.BuildArgs, o.Target, o.Labels = co.BuildArgs, co.Target, co.Labels
}

// Golden builds: each testdata/build/<case> is a context with a Dockerfile;
// want.json is what the images hold: config, history, and every layer entry.
func TestGoldenBuilds(t *testing.T) {
	eachCase(t, "build", func(t *testing.T, dir, ctxDir string, co caseOptions) {
		res := mustBuild(t, ctxDir, co.Platforms, co.apply)
		golden(t, filepath.Join(dir, "want.json"), describeResult(t, res))
	})
}

// Invalid inputs: each testdata/invalid/<case> must fail with want.err.
func TestInvalidDockerfiles(t *testing.T) {
	eachCase(t, "invalid", func(t *testing.T, dir, ctxDir string, co caseOptions) {
		co.Platforms = co.Platforms[:1] // which platform fails first is a race
		_, err := build(t, ctxDir, co.Platforms, co.apply)
		if err == nil {
			t.Fatal("build succeeded, want an error")
		}
		golden(t, filepath.Join(dir, "want.err"), []byte(err.Error()+"\n"))
	})
}

func golden(t *testing.T, file string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test ./assemble -run Golden -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", file, diff)
	}
}

type imageSummary struct {
	Platform string     `json:"platform"`
	Config   v1.Config  `json:"config"`
	Author   string     `json:"author,omitempty"`
	History  []string   `json:"history"`
	Layers   [][]string `json:"layers"`
}

func describeResult(t *testing.T, res *assemble.Result) []byte {
	t.Helper()
	var out []imageSummary
	for _, pi := range res.Images {
		cf, err := pi.Image.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		s := imageSummary{Platform: platform.FromOCI(pi.Platform).String(), Config: cf.Config, Author: cf.Author}
		for _, h := range cf.History {
			line := h.CreatedBy
			if h.EmptyLayer {
				line += " (no layer)"
			}
			s.History = append(s.History, line)
		}
		ls, err := pi.Image.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			s.Layers = append(s.Layers, entryLines(t, l))
		}
		out = append(out, s)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// entryLines prints a layer's entries as "type mode uid:gid name[ -> link] size".
func entryLines(t *testing.T, l v1.Layer) []string {
	files := layerFiles(t, l)
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var lines []string
	for _, n := range names {
		f := files[n]
		line := fmt.Sprintf("%c %04o %d:%d %s", typeChar(f.Type), f.Mode, f.UID, f.GID, n)
		if f.Link != "" {
			line += " -> " + f.Link
		}
		if f.Type == tar.TypeReg {
			line += fmt.Sprintf(" %q", f.Data)
		}
		lines = append(lines, line)
	}
	return lines
}

func typeChar(b byte) byte {
	i := slices.Index([]byte{tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink}, b)
	if i < 0 {
		return '?'
	}
	return "-dlh"[i]
}
