package layers

import (
	"fmt"
	"path"
	"strings"
)

// maxLinks bounds the symlinks one resolution follows, as Linux does.
const maxLinks = 40

// linkFunc tells what stands at a relative path of a tree: isLink and its
// target for a symlink; isLink false for anything else, or nothing.
type linkFunc func(rel string) (target string, isLink bool, err error)

// resolveLinks follows the symlinks of every component of the relative
// path p as if the tree's root were "/": absolute and climbing links are
// re-rooted, never followed out. Components that do not exist are taken as
// they are. It returns the real path, relative ("" for the root).
func resolveLinks(p string, link linkFunc) (string, error) {
	parts := splitPath(p)
	cur := ""
	for hops := 0; len(parts) > 0; {
		next := path.Join(cur, parts[0])
		parts = parts[1:]
		target, isLink, err := link(next)
		if err != nil {
			return "", err
		}
		if !isLink {
			cur = next
			continue
		}
		if hops++; hops > maxLinks {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		if !path.IsAbs(target) {
			target = path.Join("/", cur, target)
		}
		parts, cur = append(splitPath(target), parts...), ""
	}
	return cur, nil
}

// splitPath cuts a path into its components, with "." and ".." resolved
// lexically and never above the root.
func splitPath(p string) []string {
	p = strings.Trim(path.Clean("/"+p), "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}
