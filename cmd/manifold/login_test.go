package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/manifold-build/manifold/assemble/assembletest"
	"github.com/manifold-build/manifold/registry/registrytest"
)

// withStdin runs fn with os.Stdin reading data.
func withStdin(t *testing.T, data string, fn func()) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.WriteString(data)
	w.Close()
	saved := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = saved; r.Close() }()
	fn()
}

// Log in to Debian's registry behind htpasswd and TLS with a test CA:
// before, a push fails naming the registry and how to log in; a wrong
// password is refused; after, build --push, inspect, copy and ls work;
// config.json is 0600 and keeps its other entries; after logout a push
// fails with the hint again. No output ever holds the password.
func TestLoginTLSRegistry(t *testing.T) {
	const user, password = "ci-user", "p4ss-Wd-93f1c7"
	host, ca := registrytest.DistributionAuth(t, user, password)
	cfgDir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", cfgDir)
	other := `{"auths":{"other.example":{"auth":"b3RoZXI6c2VjcmV0"}},"credHelpers":{"helped.example":"none"},"psFormat":"table"}`
	os.WriteFile(filepath.Join(cfgDir, "config.json"), []byte(other), 0o600)
	var outputs []string
	mf := func(args ...string) (int, string) {
		t.Helper()
		code, out, errOut := manifold(t, args...)
		outputs = append(outputs, out, errOut)
		return code, out + errOut
	}

	memHost, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, memHost+"/library/busybox:1", false, "linux/amd64", "linux/arm64")
	ctx := contextDir(t, fmt.Sprintf("FROM %s\nCOPY hello.txt /\n", base))
	tag := host + "/app/private:1"
	hint := "manifold login " + host
	if code, out := mf("build", "--platform", twoPlatforms, "--ca-cert", ca, "-t", tag, "--push", ctx); code != 1 || !strings.Contains(out, hint) {
		t.Fatalf("push before login: exit %d, %q; want 1 and %q", code, out, hint)
	}
	if code, out := mf("login", "--ca-cert", ca, "-u", user, "-p", "wrong-password", host); code != 1 || !strings.Contains(out, host) || !strings.Contains(out, "refused") {
		t.Errorf("login with a wrong password: exit %d, %q; want 1, the registry named", code, out)
	}
	withStdin(t, password+"\n", func() {
		if code, out := mf("login", "--ca-cert", ca, "-u", user, "--password-stdin", host); code != 0 {
			t.Fatalf("login: exit %d, %s", code, out)
		}
	})
	fi, err := os.Stat(filepath.Join(cfgDir, "config.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config.json: %v %v, want mode 0600", fi, err)
	}
	var cfg map[string]any
	data, _ := os.ReadFile(filepath.Join(cfgDir, "config.json"))
	json.Unmarshal(data, &cfg)
	auths, _ := cfg["auths"].(map[string]any)
	if auths[host] == nil || auths["other.example"] == nil || cfg["credHelpers"] == nil || cfg["psFormat"] != "table" {
		t.Errorf("config.json after login: %s; want the new entry and every old one", data)
	}

	if code, out := mf("build", "--platform", twoPlatforms, "--ca-cert", ca, "-t", tag, "--push", ctx); code != 0 {
		t.Fatalf("push after login: exit %d\n%s", code, out)
	}
	if code, out := mf("inspect", "--ca-cert", ca, tag); code != 0 || !strings.Contains(out, "linux/arm64") {
		t.Errorf("inspect: exit %d, %s", code, out)
	}
	if code, out := mf("copy", "--ca-cert", ca, tag, host+"/app/copied:1"); code != 0 {
		t.Errorf("copy within the registry: exit %d, %s", code, out)
	}
	if code, out := mf("ls", "--ca-cert", ca, host+"/app/copied"); code != 0 || strings.TrimSpace(out) != "1" {
		t.Errorf("ls: exit %d, %q", code, out)
	}
	// $SSL_CERT_FILE instead of --ca-cert: a process of its own, as Go
	// reads it once.
	bin := buildManifold(t, t.TempDir())
	cmd := exec.Command(bin, "digest", tag)
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+ca)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "sha256:") {
		t.Errorf("digest with SSL_CERT_FILE: %v, %s", err, out)
	} else {
		outputs = append(outputs, string(out))
	}

	if code, out := mf("logout", host); code != 0 {
		t.Errorf("logout: exit %d, %s", code, out)
	}
	if code, out := mf("build", "--platform", twoPlatforms, "--ca-cert", ca, "-t", host+"/app/private:2", "--push", ctx); code != 1 || !strings.Contains(out, hint) {
		t.Errorf("push after logout: exit %d, %q; want 1 and %q", code, out, hint)
	}
	for _, o := range outputs {
		if strings.Contains(o, password) {
			t.Errorf("an output holds the password: %q", o)
		}
	}
}

// A credential helper named in config.json serves pull and push.
func TestCredentialHelper(t *testing.T) {
	const user, password = "helper-user", "h3lper-pass-55"
	host, ca := registrytest.DistributionAuth(t, user, password)
	bin := t.TempDir()
	helper := fmt.Sprintf("#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\nprintf '{\"ServerURL\":\"%%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}' \"$server\"\n", user, password)
	os.WriteFile(filepath.Join(bin, "docker-credential-manifoldtest"), []byte(helper), 0o755)
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	cfgDir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", cfgDir)
	os.WriteFile(filepath.Join(cfgDir, "config.json"), []byte(fmt.Sprintf(`{"credHelpers":{%q:"manifoldtest"}}`, host)), 0o600)
	memHost, _ := registrytest.Memory(t)
	base := assembletest.Busybox(t, memHost+"/library/busybox:1", false, "linux/amd64")
	ctx := contextDir(t, fmt.Sprintf("FROM %s\nCOPY hello.txt /\n", base))
	tag := host + "/app/helped:1"
	if code, _, errOut := manifold(t, "build", "--platform", "linux/amd64", "--ca-cert", ca, "-t", tag, "--push", ctx); code != 0 {
		t.Fatalf("push through the helper: exit %d\n%s", code, errOut)
	}
	if code, out, errOut := manifold(t, "digest", "--ca-cert", ca, tag); code != 0 || !strings.HasPrefix(out, "sha256:") {
		t.Errorf("pull through the helper: exit %d, %s %s", code, out, errOut)
	}
}
