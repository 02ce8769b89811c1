package main

import (
	"os/exec"
	"strings"
	"testing"
)

// layers, registry and emulate never import each other, and no package
// imports cmd.
func TestPackageBoundaries(t *testing.T) {
	const mod = "github.com/manifold-build/manifold/"
	leaves := []string{"layers", "registry", "emulate"}
	for _, pkg := range leaves {
		cmd := exec.Command("go", "list", "-deps", "./"+pkg)
		cmd.Dir = "../.."
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps ./%s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, other := range append(leaves, "assemble", "cmd") {
				if other != pkg && (dep == mod+other || strings.HasPrefix(dep, mod+other+"/")) {
					t.Errorf("%s imports %s", pkg, dep)
				}
			}
		}
	}
}
