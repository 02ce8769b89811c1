// Package emulate runs a command in a container root filesystem: in a
// sandbox of Linux namespaces that manifold's own binary sets up when
// re-executed as an init, and under qemu-user-static when the platform is
// foreign, through a private binfmt_misc instance registered with flags PF.
package emulate
