package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/manifold-build/manifold/assemble"
	"github.com/manifold-build/manifold/registry"
)

// destination is where a build's result goes: a registry, an OCI layout
// directory, an OCI tarball, or (with none of those) the local store.
type destination struct {
	tags   []name.Reference
	push   bool
	layout string
	tar    string
	store  *registry.Store
	// dockerTypes is oci-mediatypes=false: Docker media types for images
	// FROM scratch.
	dockerTypes bool
	// byDigest is push-by-digest=true: the result goes to the tags'
	// repositories by digest alone, no tag made (a one-platform build as
	// its image, not an index), for a later index create to merge.
	byDigest bool
	// pusher pushes to tags, asking what they name while the build runs.
	pusher *registry.Pusher
}

// prepare starts what a push can do before there is a result.
func (d *destination) prepare(ctx context.Context, ro registry.Options) {
	if d.push && !d.byDigest {
		d.pusher = registry.NewPusher(ctx, d.tags, ro)
	}
}

func (f *buildFlags) destination(ro registry.Options) (*destination, error) {
	d := &destination{push: f.push}
	var tags []string
	for _, t := range f.tags {
		file, ok := strings.CutPrefix(t, "@")
		if !ok {
			tags = append(tags, t)
			continue
		}
		list, err := readTagList(file) // -t @FILE, -t @- (manifold tags' output)
		if err != nil {
			return nil, usagef("-t %s: %v", t, err)
		}
		tags = append(tags, list...)
	}
	for _, t := range tags {
		ref, err := name.ParseReference(t)
		if err != nil {
			return nil, usagef("invalid tag %q: %v", t, err)
		}
		d.tags = append(d.tags, ref)
	}
	for _, o := range f.outputs {
		if err := d.addOutput(o); err != nil {
			return nil, err
		}
	}
	if d.push && len(d.tags) == 0 {
		return nil, usagef("--push needs at least one -t tag")
	}
	if !d.push && d.layout == "" && d.tar == "" {
		d.store = ro.Store
	}
	return d, nil
}

func (d *destination) addOutput(spec string) error {
	kv := map[string]string{}
	for _, part := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(part, "=")
		kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	switch kv["type"] {
	case "registry", "image":
		d.push = d.push || kv["type"] == "registry" || kv["push"] == "true"
		d.byDigest = kv["push-by-digest"] == "true"
		if n := kv["name"]; n != "" {
			for _, t := range strings.Split(n, ";") {
				ref, err := name.ParseReference(t)
				if err != nil {
					return usagef("invalid name %q in --output: %v", t, err)
				}
				d.tags = append(d.tags, ref)
			}
		}
	case "oci-layout":
		d.layout = kv["dest"]
	case "oci":
		d.tar = kv["dest"]
	default:
		return usagef("unknown --output type %q (want oci-layout, oci or registry)", kv["type"])
	}
	if v, ok := kv["oci-mediatypes"]; ok {
		d.dockerTypes = v == "false"
	}
	if (kv["type"] == "oci" || kv["type"] == "oci-layout") && kv["dest"] == "" {
		return usagef("--output type=%s needs dest=PATH", kv["type"])
	}
	return nil
}

func (d *destination) write(ctx context.Context, res *assemble.Result, ro registry.Options, metadata string, out, errOut io.Writer) error {
	h, err := res.Index.Digest()
	if err != nil {
		return err
	}
	if d.layout != "" {
		if err := registry.WriteLayout(d.layout, res.Index, d.tags); err != nil {
			return fmt.Errorf("writing OCI layout %s: %w", d.layout, err)
		}
		fmt.Fprintf(errOut, "wrote OCI layout %s\n", d.layout)
	}
	if d.tar != "" {
		if err := registry.WriteOCITar(d.tar, res.Index, d.tags); err != nil {
			return fmt.Errorf("writing OCI tarball %s: %w", d.tar, err)
		}
		fmt.Fprintf(errOut, "wrote OCI tarball %s\n", d.tar)
	}
	switch {
	case d.push && d.byDigest:
		if h, err = d.pushByDigest(ctx, res, ro, errOut); err != nil {
			return err
		}
	case d.push:
		if d.pusher == nil {
			d.prepare(ctx, ro)
		}
		d.pusher.OnProgress = ro.OnProgress
		if _, err := d.pusher.Push(ctx, res.Index); err != nil {
			return err
		}
		for _, t := range d.tags {
			fmt.Fprintf(errOut, "pushed %s\n", t.Name())
		}
	}
	if d.store != nil {
		if len(d.tags) == 0 {
			fmt.Fprintln(errOut, "no -t tag given: the result is not stored")
		} else if err := d.store.Put(res.Index, d.tags); err != nil {
			return err
		} else {
			for _, t := range d.tags {
				fmt.Fprintf(errOut, "stored %s in %s\n", t.Name(), d.store.Dir)
			}
		}
	}
	if metadata != "" {
		if err := writeMetadata(metadata, h.String(), d.tags); err != nil {
			return err
		}
	}
	fmt.Fprintln(out, h.String())
	return nil
}

// pushByDigest writes the result to each tag's repository by digest
// only: one platform as its image, several as the index.
func (d *destination) pushByDigest(ctx context.Context, res *assemble.Result, ro registry.Options, errOut io.Writer) (v1.Hash, error) {
	src := &registry.Source{Name: "the build", Index: res.Index}
	if len(res.Images) == 1 {
		src = &registry.Source{Name: "the build", Image: res.Images[0].Image}
	}
	h, err := src.Digest()
	if err != nil {
		return h, err
	}
	for _, t := range d.tags {
		dst := t.Context().Digest(h.String())
		if _, err := registry.Write(ctx, src, dst, ro); err != nil {
			return h, err
		}
		fmt.Fprintf(errOut, "pushed %s\n", dst.Name())
	}
	return h, nil
}
