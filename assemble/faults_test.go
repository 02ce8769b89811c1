package assemble_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/registry"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// Retries fast enough for a test, as many as a CI runner gets.
var testRetry = registry.Retry{Attempts: registry.DefaultRetry.Attempts, Delay: 2 * time.Millisecond, MaxDelay: 20 * time.Millisecond}

// faultSeeds is how many fault patterns each mode is built through.
const faultSeeds = 20

// A two-platform build that reads its base from, and pushes to, a registry
// that fails one request in five (5xx, 429, resets, slow and truncated
// bodies) succeeds every time, with the index of a fault-free build; with
// every request failing it fails and leaves no tag.
func TestRegistryFaultsAreInvisible(t *testing.T) {
	host, _ := registrytest.Distribution(t)
	faulty, faults := registrytest.Faulty(t, host, registrytest.Faults{})
	plats := []string{"linux/amd64", "linux/arm64"}
	base := assembletest.Busybox(t, faulty+"/base/busybox:1", false, plats...)
	for _, mode := range []struct {
		name, step string
		run        bool
	}{
		{"copy", "COPY a.txt /a.txt", false},
		{"run", "RUN uname -m > /arch && cat /a.txt", true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			ctxDir := writeContext(t, map[string]string{
				"Dockerfile": fmt.Sprintf("FROM %s\nCOPY a.txt /a.txt\n%s\n", base, mode.step),
				"a.txt":      "a\n",
			})
			buildPush := func(tag string) (v1.Hash, error) {
				return buildAndPush(t, ctxDir, plats, faulty+"/apps/"+mode.name+":"+tag, mode.run, nil)
			}
			want, err := buildPush("clean")
			if err != nil {
				t.Fatalf("without faults: %v", err)
			}
			injected, failed := 0, 0
			for seed := uint64(1); seed <= faultSeeds; seed++ {
				faults.Set(registrytest.Faults{Rate: 0.2, Seed: seed})
				got, err := buildPush(fmt.Sprint("seed", seed))
				injected += faults.Total()
				if err != nil {
					failed++
					t.Errorf("seed %d (%s): %v", seed, faults, err)
					continue
				}
				if got != want {
					t.Errorf("seed %d (%s): index %s, want %s as without faults", seed, faults, got, want)
				}
			}
			t.Logf("%d of %d builds survived %d injected faults", faultSeeds-failed, faultSeeds, injected)
			if injected < faultSeeds {
				t.Errorf("only %d faults injected in %d builds", injected, faultSeeds)
			}

			all := registrytest.Faults{Rate: 1, Seed: 1, Kinds: []registrytest.Fault{registrytest.ServerError, registrytest.TooMany, registrytest.Reset}}
			faults.Set(all)
			_, err = buildPush("never")
			if err == nil {
				t.Fatal("a build through a registry that fails every request succeeded")
			}
			t.Logf("with every request failing: %v", err)
			// Built without faults, pushed into them.
			faults.Set(registrytest.Faults{})
			_, err = buildAndPush(t, ctxDir, plats, faulty+"/apps/"+mode.name+":never", mode.run, func() { faults.Set(all) })
			faults.Set(registrytest.Faults{})
			if err == nil {
				t.Fatal("a push to a registry that fails every request succeeded")
			}
			t.Logf("pushing with every request failing: %v", err)
			if _, err := remote.Head(ref(t, faulty+"/apps/"+mode.name+":never")); err == nil {
				t.Error("the failed build left its tag")
			}
		})
	}
}

// buildAndPush builds with fresh caches, reading the base with retries,
// and pushes to tag.
func buildAndPush(t *testing.T, ctxDir string, plats []string, tag string, run bool, beforePush func()) (v1.Hash, error) {
	t.Helper()
	ro := registry.Options{Retry: testRetry}
	res, err := build(t, ctxDir, plats, func(o *assemble.Options) {
		o.Registry = ro
		if run {
			withSandbox(o)
		}
	})
	if err != nil {
		return v1.Hash{}, err
	}
	defer res.Close()
	if beforePush != nil {
		beforePush()
	}
	r, err := name.ParseReference(tag)
	if err != nil {
		t.Fatal(err)
	}
	return registry.Push(context.Background(), res.Index, []name.Reference{r}, ro)
}
