package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/manifold-build/manifold/"

// shared are the leaf packages everybody may import: they import nothing
// of manifold's.
var shared = []string{mod + "emulate/platform"}

// layers, registry and emulate never import each other, and no package
// imports cmd; the shared leaves import nothing of manifold's.
func TestPackageBoundaries(t *testing.T) {
	leaves := []string{"layers", "registry", "emulate"}
	for _, pkg := range leaves {
		for _, dep := range deps(t, "./"+pkg) {
			if slices.Contains(shared, dep) {
				continue
			}
			for _, other := range append(leaves, "assemble", "cmd") {
				if other != pkg && (dep == mod+other || strings.HasPrefix(dep, mod+other+"/")) {
					t.Errorf("%s imports %s", pkg, dep)
				}
			}
		}
	}
	for _, leaf := range shared {
		for _, dep := range deps(t, leaf) {
			if dep != leaf && strings.HasPrefix(dep, mod) {
				t.Errorf("shared leaf %s imports %s", leaf, dep)
			}
		}
	}
}

func deps(t *testing.T, pkg string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", pkg)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}
