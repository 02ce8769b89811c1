package assemble_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/assemble/testkit"
	"github.com/manifold-build/manifold/emulate"
	"github.com/manifold-build/manifold/layers"
	"github.com/manifold-build/manifold/registry"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// BenchmarkNoRunBuildAndPush measures the registry-native path: a two-
// platform build on the busybox base with a COPY of 200 small files and a
// few metadata steps, pushed to an in-memory registry on loopback.
func BenchmarkNoRunBuildAndPush(b *testing.B) {
	host, _ := registrytest.Memory(b)
	base := assembletest.Busybox(b, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	files := map[string]string{"Dockerfile": fmt.Sprintf("FROM %s\nENV APP=/app\nCOPY app/ /app/\nLABEL a=b\nCMD [\"/app/run\"]\n", base)}
	for i := range 200 {
		files[fmt.Sprintf("app/f%03d.txt", i)] = strings.Repeat("x", i*10)
	}
	ctxDir := writeContext(b, files)
	plats := assembletest.Platforms(b, "linux/amd64", "linux/arm64")
	tag := ref(b, host+"/bench/app:1")
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		epoch := assembletest.Epoch
		res, err := assemble.Build(context.Background(), assemble.Options{
			Context: ctxDir, Platforms: plats, Epoch: &epoch,
			Rootfs:    &layers.Cache{Dir: b.TempDir()},
			BuildArgs: map[string]string{"N": fmt.Sprint(i)},
		})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := registry.Push(context.Background(), res.Index, []name.Reference{tag}, registry.Options{}); err != nil {
			b.Fatal(err)
		}
		res.Close()
	}
}

// BenchmarkSeedExampleTwoPlatforms builds the seed example (a RUN step,
// native on amd64, under qemu on arm64) with a warm base cache, as a second
// build on a CI runner would, without pushing.
func BenchmarkSeedExampleTwoPlatforms(b *testing.B) {
	host, _ := registrytest.Memory(b)
	base := assembletest.Busybox(b, host+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	plats := assembletest.Platforms(b, "linux/amd64", "linux/arm64")
	cache := &layers.Cache{Dir: b.TempDir()}
	ctxDir := filepath.Join(testkit.RepoRoot(), "testdata", "examples", "curl-example")
	for b.Loop() {
		epoch := assembletest.Epoch
		res, err := assemble.Build(context.Background(), assemble.Options{
			Context: ctxDir, Platforms: plats, Epoch: &epoch, Rootfs: cache,
			BuildArgs: map[string]string{"BASE": base.String()},
			Runner:    &emulate.Sandbox{},
		})
		if err != nil {
			b.Fatal(err)
		}
		res.Close()
	}
}
