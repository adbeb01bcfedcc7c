// Package linux is loopvisor's one door to the kernel's raw interfaces:
// UAPI constants and structures of the loop driver, the block layer and
// seccomp (each says which C definition it mirrors), and the raw system
// call wrappers, which retry EINTR. Everything that needs unsafe for a
// kernel structure lives here, in *_unsafe.go files.
//
// Design: constants are declared once, here; other packages alias them
// rather than repeat a number. Decoders take bytes copied from a
// container and never trust a length or a pointer in them.
//
// When not to use this package: for anything golang.org/x/sys/unix already
// offers with the right semantics; wrap only what needs a retry or a
// structure x/sys lacks.
package linux
