package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/manifold-build/manifold/emulate/platform"
	"github.com/manifold-build/manifold/registry"
)

func runInspect(ctx context.Context, args []string, out, errOut io.Writer) error {
	var raw bool
	var plat string
	var rf registryFlags
	fs := flagSet("inspect", "[flags] IMAGE", errOut)
	fs.BoolVar(&raw, "raw", false, "print the manifest (or, with --platform, that platform's manifest) as JSON")
	fs.StringVar(&plat, "platform", "", "show only this platform's image")
	rf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("inspect takes exactly one IMAGE")
	}
	ro, err := rf.options()
	if err != nil {
		return err
	}
	src, err := registry.Open(ctx, fs.Arg(0), ro)
	if err != nil {
		return err
	}
	if plat != "" {
		p, err := platform.Parse(plat)
		if err != nil {
			return usageError{err}
		}
		img, desc, err := src.ForPlatform(p)
		if err != nil {
			return err
		}
		if raw {
			return printRaw(out, img.RawManifest)
		}
		return describeImage(out, img, desc)
	}
	if raw {
		if src.Index != nil {
			return printRaw(out, src.Index.RawManifest)
		}
		return printRaw(out, src.Image.RawManifest)
	}
	return describe(out, src)
}

func printRaw(out io.Writer, manifest func() ([]byte, error)) error {
	b, err := manifest()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", b)
	return err
}

func describe(out io.Writer, src *registry.Source) error {
	mt, err := src.MediaType()
	if err != nil {
		return err
	}
	h, err := src.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Name:      %s\nMediaType: %s\nDigest:    %s\n", src.Name, mt, h)
	if src.Index == nil {
		fmt.Fprintln(out)
		return describeImage(out, src.Image, nil)
	}
	ms, err := src.Manifests()
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "\nManifests:")
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, d := range ms {
		fmt.Fprintf(tw, "  %s\t%s\t%d bytes\n", platform.FromOCI(*d.Platform), d.Digest, d.Size)
	}
	tw.Flush()
	for _, d := range ms {
		img, err := src.Index.Image(d.Digest)
		if err != nil {
			return err
		}
		fmt.Fprintln(out)
		if err := describeImage(out, img, &d); err != nil {
			return err
		}
	}
	return nil
}

func describeImage(out io.Writer, img v1.Image, desc *v1.Descriptor) error {
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	p := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
	if desc != nil && desc.Platform != nil {
		p = *desc.Platform
	}
	fmt.Fprintf(out, "%s:\n", platform.FromOCI(p))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  Platform:\t%s\n", strings.TrimSuffix(cf.OS+"/"+cf.Architecture+"/"+cf.Variant, "/"))
	fmt.Fprintf(tw, "  Config:\t%s\n", m.Config.Digest)
	fmt.Fprintf(tw, "  Layers:\t%d\n", len(m.Layers))
	for i, l := range m.Layers {
		fmt.Fprintf(tw, "  %d:\t%s %d bytes %s\n", i+1, l.Digest, l.Size, l.MediaType)
	}
	c := cf.Config
	row := func(k, v string) {
		if v != "" && v != "null" {
			fmt.Fprintf(tw, "  %s:\t%s\n", k, v)
		}
	}
	row("Env", strings.Join(c.Env, " "))
	row("Entrypoint", jsonString(c.Entrypoint))
	row("Cmd", jsonString(c.Cmd))
	row("WorkingDir", c.WorkingDir)
	row("User", c.User)
	row("Labels", sortedPairs(c.Labels))
	row("ExposedPorts", sortedKeys(c.ExposedPorts))
	row("Volumes", sortedKeys(c.Volumes))
	row("StopSignal", c.StopSignal)
	return tw.Flush()
}

func jsonString(v []string) string {
	if v == nil {
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func sortedPairs(m map[string]string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, k+"="+m[k])
	}
	return strings.Join(out, " ")
}

func sortedKeys(m map[string]struct{}) string {
	return strings.Join(slices.Sorted(maps.Keys(m)), " ")
}
