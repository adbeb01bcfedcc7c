// Package sandboxinit is the init of a `loopvisor run` sandbox: the
// supervisor re-executes its own binary with Arg as argv[1] inside new
// user, mount and pid namespaces, and Maybe (called first thing in main)
// turns that process into the sandbox's pid 1.
//
// Design: the init makes / private, attaches the instance's view (detached
// mounts on fds ViewFD0...) over /dev and the sysfs block directories,
// mounts devpts, shm and proc, attaches the view's files over the new
// /proc's (ProcFD0...: /proc/partitions), loads the notify filter, hands the listener
// to the supervisor over SockFD and waits for its acknowledgement, then
// runs the command, forwards the signals in Forwarded and exits with the
// command's status. It never calls setns: everything it needs reaches it
// as file descriptors, so the supervisor never has to enter the sandbox.
//
// With --user (loopvisor run started by an unprivileged user,
// supervisor.RunAsUser) the init first waits until its parent has had
// newuidmap/newgidmap write the id maps, execs itself again (ReexecFlag)
// to hold the capabilities of the namespace's root, and builds /dev from
// binds of the host's harmless nodes; the agent binds in loop-control, fuse
// and the loop nodes.
//
// When not to use this package: anywhere but a process started by
// supervisor.Run or supervisor.RunAsUser; it assumes the fds and namespaces Run sets up.
package sandboxinit
