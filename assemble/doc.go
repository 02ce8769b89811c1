// Package assemble turns a Dockerfile and a build context into one image per
// platform and an index over them. It owns the Dockerfile adapter (BuildKit's
// parser, behind dockerfile.go), ARG and ENV expansion, the stage graph, and
// the build of each platform; it asks package registry for bases, package
// layers for layer bytes, and a Runner (package emulate) for RUN steps.
package assemble
