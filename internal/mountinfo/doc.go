// Package mountinfo holds what the packages that read /proc/PID/mountinfo
// share: Unescape, which undoes the kernel's octal escapes in its paths.
//
// When not to use this package: to parse mountinfo lines. Each reader
// (mountproxy for a caller's mounts, devcgroup for the cgroup hierarchies)
// takes the fields it needs itself.
package mountinfo
