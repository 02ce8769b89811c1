package main

import (
	"encoding/csv"
	"os"
	"strings"

	"github.com/manifold-build/manifold/assemble"
)

// secrets reads --secret flags in buildx's syntax: id=ID,src=FILE (or
// source=), id=ID,env=VAR, or id=ID,type=env (the variable named ID).
func secrets(list []string) (map[string]assemble.Secret, error) {
	out := map[string]assemble.Secret{}
	for _, spec := range list {
		fields, err := csv.NewReader(strings.NewReader(spec)).Read()
		if err != nil {
			return nil, usagef("--secret %s: %v", spec, err)
		}
		var id, typ string
		var sec assemble.Secret
		for _, f := range fields {
			k, v, _ := strings.Cut(f, "=")
			switch strings.ToLower(k) {
			case "id":
				id = v
			case "type":
				typ = v
			case "src", "source":
				sec.File = v
			case "env":
				sec.Env = v
			default:
				return nil, usagef("--secret %s: unknown key %q (id, type, src, env)", spec, k)
			}
		}
		switch {
		case id == "":
			return nil, usagef("--secret %s: it needs an id", spec)
		case typ == "env" && sec.Env == "" && sec.File == "":
			sec.Env = id
		case typ != "" && typ != "env" && typ != "file":
			return nil, usagef("--secret %s: type is file or env, not %q", spec, typ)
		case sec.File == "" && sec.Env == "":
			return nil, usagef("--secret %s: give src=FILE or env=VARIABLE", spec)
		}
		if sec.File != "" {
			if _, err := os.Stat(sec.File); err != nil {
				return nil, usagef("--secret %s: %v", spec, err)
			}
		}
		out[id] = sec
	}
	return out, nil
}

// sshAgents reads --ssh flags: ID=SOCKET, or ID alone for $SSH_AUTH_SOCK.
func sshAgents(list []string) (map[string]string, error) {
	out := map[string]string{}
	for _, spec := range list {
		id, sock, ok := strings.Cut(spec, "=")
		if !ok {
			sock = os.Getenv("SSH_AUTH_SOCK")
			if sock == "" {
				return nil, usagef("--ssh %s: SSH_AUTH_SOCK is not set; give %s=SOCKET", spec, id)
			}
		}
		if strings.Contains(sock, ",") {
			return nil, usagef("--ssh %s: give one agent socket (key files are not supported)", spec)
		}
		fi, err := os.Stat(sock)
		if err != nil || fi.Mode()&os.ModeSocket == 0 {
			return nil, usagef("--ssh %s: %s is no SSH agent socket", spec, sock)
		}
		out[id] = sock
	}
	return out, nil
}
