package mountproxy

// fusejail.c runs before the Go runtime in a re-executed loopvisor: the
// jailed FUSE helper launcher, and fusermount inside the jail.

// #cgo CFLAGS: -Wall -O2
import "C"
