package assemble

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
)

// owner resolves a --chown value: numeric IDs as they are, names through the
// stage's own /etc/passwd and /etc/group.
func (s *state) owner(ctx context.Context, spec string) (*idPair, error) {
	if spec == "" {
		return nil, nil
	}
	spec, err := s.expand(spec)
	if err != nil {
		return nil, err
	}
	user, group, hasGroup := strings.Cut(spec, ":")
	if _, err := strconv.Atoi(user); err != nil || (hasGroup && group != "") {
		if err := s.loadUserDB(ctx); err != nil {
			return nil, err
		}
	}
	ids := &idPair{}
	var primary int
	if n, err := strconv.Atoi(user); err == nil {
		ids.uid, primary = n, n
	} else {
		rec, err := s.lookupDB("etc/passwd", user)
		if err != nil {
			return nil, err
		}
		if ids.uid, err = strconv.Atoi(rec[2]); err != nil {
			return nil, fmt.Errorf("bad uid for %s in /etc/passwd", user)
		}
		if primary, err = strconv.Atoi(rec[3]); err != nil {
			return nil, fmt.Errorf("bad gid for %s in /etc/passwd", user)
		}
	}
	ids.gid = primary
	if !hasGroup || group == "" {
		return ids, nil
	}
	if n, err := strconv.Atoi(group); err == nil {
		ids.gid = n
		return ids, nil
	}
	rec, err := s.lookupDB("etc/group", group)
	if err != nil {
		return nil, err
	}
	if ids.gid, err = strconv.Atoi(rec[2]); err != nil {
		return nil, fmt.Errorf("bad gid for %s in /etc/group", group)
	}
	return ids, nil
}

// loadUserDB reads the stage's /etc/passwd and /etc/group, in one pass
// over its layers, unless the stage's files have not changed since the last
// time.
func (s *state) loadUserDB(ctx context.Context) error {
	if s.userDB != nil && s.userDBLayers == len(s.layers) {
		return nil
	}
	db, err := s.readFiles(ctx, "etc/passwd", "etc/group")
	if err != nil {
		return fmt.Errorf("reading /etc/passwd and /etc/group: %w", err)
	}
	s.userDB, s.userDBLayers = db, len(s.layers)
	return nil
}

// lookupDB finds the colon-separated record called name in a passwd-style
// file of the stage.
func (s *state) lookupDB(file, name string) ([]string, error) {
	data, found := s.userDB[file]
	if !found {
		return nil, fmt.Errorf("unable to find %q: the stage has no /%s", name, file)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		rec := strings.Split(sc.Text(), ":")
		if len(rec) >= 3 && rec[0] == name && (file != "etc/passwd" || len(rec) >= 4) {
			return rec, nil
		}
	}
	return nil, fmt.Errorf("unable to find %q in /%s", name, file)
}
