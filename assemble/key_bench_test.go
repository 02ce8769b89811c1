package assemble

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkContextKey measures the cache key input of a COPY of a whole
// context of 10,000 small files: walking it, .dockerignore, and hashing
// every file's name, mode, size and bytes: read (read), or kept from an
// earlier build that read them, the files unchanged since (kept).
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
	b.Run("read", func(b *testing.B) {
		for b.Loop() {
			if _, err := cd.source().digest([]string{"."}); err != nil {
				b.Fatal(err)
			}
		}
	})
	defer SetSettled(0)()
	sums := b.TempDir()
	cd.sums = openContextSums(sums, dir, "Dockerfile")
	cd.source().digest([]string{"."})
	cd.sums.save()
	b.Run("kept", func(b *testing.B) {
		for b.Loop() {
			cd.sums = openContextSums(sums, dir, "Dockerfile")
			if _, err := cd.source().digest([]string{"."}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
