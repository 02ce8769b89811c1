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
	ids := &idPair{}
	var primary int
	if n, err := strconv.Atoi(user); err == nil {
		ids.uid, primary = n, n
	} else {
		rec, err := s.lookupDB(ctx, "etc/passwd", user)
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
	rec, err := s.lookupDB(ctx, "etc/group", group)
	if err != nil {
		return nil, err
	}
	if ids.gid, err = strconv.Atoi(rec[2]); err != nil {
		return nil, fmt.Errorf("bad gid for %s in /etc/group", group)
	}
	return ids, nil
}

// lookupDB finds the colon-separated record called name in a passwd-style
// file of the stage.
func (s *state) lookupDB(ctx context.Context, file, name string) ([]string, error) {
	data, found, err := s.readFile(ctx, file)
	if err != nil {
		return nil, fmt.Errorf("reading /%s: %w", file, err)
	}
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
