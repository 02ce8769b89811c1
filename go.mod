module github.com/manifold-build/manifold

go 1.26.8

// Beyond the chosen dependencies: go-cmp (tests only, diffs of golden
// files), moby/patternmatcher (Docker's own .dockerignore matcher) and
// x/sync (errgroup: platforms in parallel, bounded, first error cancels),
// ulikunitz/xz (ADD of .tar.xz archives, as BuildKit extracts them: the
// pure-Go xz decoder that Go projects use; klauspost/compress has none),
// docker/cli's config package (already go-containerregistry's, for reading
// config.json): login and logout edit config.json and talk to credential
// stores and helpers exactly as docker login does, x/term and
// morikuni/aec (the live progress view: terminal size, cursor and erase
// sequences; aec is what BuildKit's own display uses), x/crypto (tests
// only: bcrypt for a registry's htpasswd).
require (
	github.com/docker/cli v29.8.2+incompatible
	github.com/google/go-cmp v0.7.0
	github.com/google/go-containerregistry v0.22.1
	github.com/klauspost/compress v1.20.4
	github.com/moby/buildkit v0.34.2
	github.com/moby/patternmatcher v0.6.1
	github.com/morikuni/aec v1.1.0
	github.com/opencontainers/go-digest v1.0.0
	github.com/spf13/pflag v1.0.10
	github.com/ulikunitz/xz v0.5.17
	golang.org/x/crypto v0.57.0
	golang.org/x/sync v0.23.0
	golang.org/x/sys v0.50.0
	golang.org/x/term v0.46.0
)

require github.com/tonistiigi/vt100 v0.0.0-20240514184818-90bafcd6abab

require (
	github.com/containerd/typeurl/v2 v2.3.0 // indirect
	github.com/docker/docker-credential-helpers v0.9.9 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/planetscale/vtprotobuf v0.6.1-0.20240319094008-0393e58bdf10 // indirect
	github.com/sirupsen/logrus v1.10.2 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
	gotest.tools/v3 v3.5.2 // indirect
)
