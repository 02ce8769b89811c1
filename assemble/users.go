package assemble

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/manifold-build/manifold/emulate"
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
	users := emulate.ParseUsers(nil, nil)
	user, group, hasGroup := strings.Cut(spec, ":")
	if _, err := strconv.Atoi(user); err != nil || (hasGroup && group != "") {
		if users, err = s.users(ctx); err != nil {
			return nil, err
		}
	}
	u, err := users.Lookup(spec, true)
	if err != nil {
		return nil, err
	}
	return &idPair{UID: u.UID, GID: u.GID}, nil
}

// users reads the stage's /etc/passwd and /etc/group, in one pass over its
// layers, unless the stage's files have not changed since the last time.
func (s *state) users(ctx context.Context) (*emulate.Users, error) {
	if s.userDB != nil && s.userDBLayers == len(s.layers) {
		return s.userDB, nil
	}
	db, err := s.readFiles(ctx, "etc/passwd", "etc/group")
	if err != nil {
		return nil, fmt.Errorf("reading /etc/passwd and /etc/group: %w", err)
	}
	s.userDB, s.userDBLayers = emulate.ParseUsers(db["etc/passwd"], db["etc/group"]), len(s.layers)
	return s.userDB, nil
}
