// Package registry is loopvisor's state directory: one journal per
// instance (which loop devices it owns, which supervisor and which
// container hold it), the directory's lock, the per-host-uid count behind
// --max-loop-per-uid across every supervisor sharing the directory, and
// supervisor-only device nodes through which loop devices are opened.
//
// Design: journals are written (atomically, by rename) before a container
// can see a device, so a supervisor killed at any point leaves enough for
// the next gc. The lock is an flock on a file in the directory; callers
// hold it only for reads and writes of journals, never across work that
// touches a container (entering its namespaces, reading its files).
// Device nodes are made here, in a directory only root can reach, and
// checked (type and dev_t) before every use, so a node the container
// controls is never followed.
//
// When not to use this package: for policy (limits are enforced by
// loopctl.Instance) or to release devices (loopctl.ReleaseDevice, gc).
package registry
