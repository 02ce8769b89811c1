package emulate

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// lookupUser resolves USER (name or uid, with an optional :group) through
// the root filesystem's /etc/passwd and /etc/group, as Docker does.
func lookupUser(spec string) (*syscall.Credential, string, error) {
	cred := &syscall.Credential{}
	if spec == "" {
		spec = "0"
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	passwd := readDB("/etc/passwd")
	home := "/"
	uid, err := strconv.Atoi(userPart)
	primary := 0
	if err == nil {
		if rec := find(passwd, 2, userPart); rec != nil {
			primary, _ = strconv.Atoi(rec[3])
			home = rec[5]
		}
	} else {
		rec := find(passwd, 0, userPart)
		if rec == nil {
			return nil, "", fmt.Errorf("unable to find user %s: no matching entries in passwd file", userPart)
		}
		uid, _ = strconv.Atoi(rec[2])
		primary, _ = strconv.Atoi(rec[3])
		home = rec[5]
	}
	cred.Uid, cred.Gid = uint32(uid), uint32(primary)
	groups := readDB("/etc/group")
	if hasGroup {
		gid, err := strconv.Atoi(groupPart)
		if err != nil {
			rec := find(groups, 0, groupPart)
			if rec == nil {
				return nil, "", fmt.Errorf("unable to find group %s: no matching entries in group file", groupPart)
			}
			gid, _ = strconv.Atoi(rec[2])
		}
		cred.Gid = uint32(gid)
		return cred, home, nil
	}
	name := userPart
	if rec := find(passwd, 2, userPart); rec != nil {
		name = rec[0]
	}
	for _, rec := range groups {
		for _, member := range strings.Split(rec[3], ",") {
			if member == name {
				if g, err := strconv.Atoi(rec[2]); err == nil && uint32(g) != cred.Gid {
					cred.Groups = append(cred.Groups, uint32(g))
				}
			}
		}
	}
	return cred, home, nil
}

// readDB reads a colon-separated file with at least 4 fields a line
// (passwd has 7, group 4); a missing file is empty.
func readDB(file string) [][]string {
	f, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	var recs [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rec := strings.Split(sc.Text(), ":")
		if len(rec) >= 4 && !strings.HasPrefix(rec[0], "#") {
			for len(rec) < 7 {
				rec = append(rec, "")
			}
			recs = append(recs, rec)
		}
	}
	return recs
}

func find(recs [][]string, field int, value string) []string {
	for _, r := range recs {
		if r[field] == value {
			return r
		}
	}
	return nil
}
