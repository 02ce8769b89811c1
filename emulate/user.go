package emulate

import (
	"os"
	"syscall"
)

// lookupUser resolves USER (name or uid, with an optional :group) through
// the root filesystem's /etc/passwd and /etc/group, as Docker does.
func lookupUser(spec string) (*syscall.Credential, string, error) {
	if spec == "" {
		spec = "0"
	}
	passwd, _ := os.ReadFile("/etc/passwd")
	group, _ := os.ReadFile("/etc/group")
	u, err := ParseUsers(passwd, group).Lookup(spec, false)
	if err != nil {
		return nil, "", err
	}
	cred := &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID)}
	for _, g := range u.Groups {
		cred.Groups = append(cred.Groups, uint32(g))
	}
	home := u.Home
	if home == "" {
		home = "/"
	}
	return cred, home, nil
}
