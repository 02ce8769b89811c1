// Command vertices reads BuildKit's progress (buildctl --progress rawjson)
// on standard input and prints the seconds that the vertices and statuses
// (the named parts of a vertex, such as "exporting layers") whose names
// contain one of its arguments took, added up: from each one's start to
// its end.
//
//	buildctl build --progress rawjson ... 2>&1 | vertices 'RUN ' 'exporting layers'
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// vertex is a vertex or a status: a status has an ID for a name.
type vertex struct {
	Digest    string
	ID        string
	Name      string
	Started   *time.Time
	Completed *time.Time
}

func main() {
	names := os.Args[1:]
	seen := map[string]*vertex{}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var status struct{ Vertexes, Statuses []vertex }
		if json.Unmarshal(sc.Bytes(), &status) != nil {
			continue // not a progress line
		}
		for _, v := range status.Statuses {
			v.Name, v.Digest = v.ID, "status "+v.ID
			status.Vertexes = append(status.Vertexes, v)
		}
		for _, v := range status.Vertexes {
			if !matches(v.Name, names) {
				continue
			}
			if seen[v.Digest] == nil {
				seen[v.Digest] = &vertex{Name: v.Name}
			}
			if v.Started != nil {
				seen[v.Digest].Started = v.Started
			}
			if v.Completed != nil {
				seen[v.Digest].Completed = v.Completed
			}
		}
	}
	var total time.Duration
	for _, v := range seen {
		if v.Started == nil || v.Completed == nil {
			fmt.Fprintf(os.Stderr, "vertices: %q did not end\n", v.Name)
			os.Exit(1)
		}
		total += v.Completed.Sub(*v.Started)
	}
	if len(seen) == 0 {
		fmt.Fprintln(os.Stderr, "vertices: none of them in the progress")
		os.Exit(1)
	}
	fmt.Printf("%.4f\n", total.Seconds())
}

func matches(name string, names []string) bool {
	for _, n := range names {
		if strings.Contains(name, n) {
			return true
		}
	}
	return false
}
