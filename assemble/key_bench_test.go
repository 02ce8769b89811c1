package assemble

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkContextKey measures the cache key input of a COPY of a whole
// context of 10,000 small files: walking it, .dockerignore, and hashing
// every file's name, mode, size and bytes.
func BenchmarkContextKey(b *testing.B) {
	dir := b.TempDir()
	for i := range 10000 {
		p := filepath.Join(dir, fmt.Sprintf("d%02d", i%100), fmt.Sprintf("f%05d.txt", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(fmt.Sprintf("file %d\n", i)), 0o644)
	}
	os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte("d99\n*.log\n"), 0o644)
	cd, err := openContext(dir)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := cd.source().digest([]string{"."}); err != nil {
			b.Fatal(err)
		}
	}
}
