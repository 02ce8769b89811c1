package emulate

import (
	"bufio"
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Users is an image's /etc/passwd and /etc/group: how USER and --chown
// names and numbers resolve, as Docker resolves them.
type Users struct {
	passwd, group [][]string // records, at least 7 and 4 fields
}

// User is a resolved user.
type User struct {
	UID, GID int
	Groups   []int  // supplementary groups: the primary one, then /etc/group's
	Home     string // "" when passwd does not know the user
}

// ParseUsers reads the contents of /etc/passwd and /etc/group (either may
// be empty or missing).
func ParseUsers(passwd, group []byte) *Users {
	return &Users{passwd: records(passwd, 7), group: records(group, 4)}
}

func records(data []byte, fields int) [][]string {
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		rec := strings.Split(sc.Text(), ":")
		if len(rec) < 3 || strings.HasPrefix(rec[0], "#") {
			continue
		}
		for len(rec) < fields {
			rec = append(rec, "")
		}
		out = append(out, rec)
	}
	return out
}

// Lookup resolves "user[:group]" by name or number, as USER does when
// chown is false: a number takes the group passwd gives it, else 0, and
// the supplementary groups that /etc/group gives it. With chown, as COPY
// --chown does, a number alone is its own group ("1000" is 1000:1000).
func (u *Users) Lookup(spec string, chown bool) (*User, error) {
	name, group, hasGroup := strings.Cut(spec, ":")
	res, err := u.user(name, chown)
	if err != nil {
		return nil, err
	}
	if hasGroup && group != "" {
		if res.GID, err = u.groupID(group); err != nil {
			return nil, err
		}
		res.Groups = []int{res.GID}
		return res, nil
	}
	res.Groups = u.supplementary(res)
	return res, nil
}

func (u *Users) user(name string, chown bool) (*User, error) {
	if n, err := strconv.Atoi(name); err == nil {
		if chown {
			return &User{UID: n, GID: n}, nil
		}
		res := &User{UID: n}
		if rec := find(u.passwd, 2, name); rec != nil {
			res.GID, res.Home = atoi(rec[3], 0), rec[5]
		}
		return res, nil
	}
	rec := find(u.passwd, 0, name)
	if rec == nil {
		return nil, fmt.Errorf("unable to find user %s: no matching entries in passwd file", name)
	}
	uid, err1 := strconv.Atoi(rec[2])
	gid, err2 := strconv.Atoi(rec[3])
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("bad uid or gid for user %s in passwd file", name)
	}
	return &User{UID: uid, GID: gid, Home: rec[5]}, nil
}

func (u *Users) groupID(name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil {
		return n, nil
	}
	rec := find(u.group, 0, name)
	if rec == nil {
		return 0, fmt.Errorf("unable to find group %s: no matching entries in group file", name)
	}
	gid, err := strconv.Atoi(rec[2])
	if err != nil {
		return 0, fmt.Errorf("bad gid for group %s in group file", name)
	}
	return gid, nil
}

// supplementary lists the user's groups as runc (and so BuildKit) gives
// them to a step: its primary group, then those whose member list names
// it (by its passwd name when it has one).
func (u *Users) supplementary(res *User) []int {
	name := strconv.Itoa(res.UID)
	if rec := find(u.passwd, 2, name); rec != nil {
		name = rec[0]
	}
	out := []int{res.GID}
	for _, rec := range u.group {
		g, err := strconv.Atoi(rec[2])
		if err == nil && g != res.GID && slices.Contains(strings.Split(rec[3], ","), name) && !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}

func find(recs [][]string, field int, value string) []string {
	for _, r := range recs {
		if r[field] == value {
			return r
		}
	}
	return nil
}

func atoi(s string, def int) int {
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	return def
}
