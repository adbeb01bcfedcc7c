// Package supervisor wires loopvisor together and owns lifecycles: it
// starts sandboxes, receives their seccomp listeners, serves their trapped
// calls against a loopctl.Instance, and releases everything when the
// sandbox's last process is gone.
//
// Process model of `loopvisor run`:
//
//	supervisor (host root)                 sandbox init (root of a new userns,
//	                                        mapped to an unprivileged host uid)
//	  Registry.GC (dead journals)
//	  Instance + View (detached tmpfs)
//	  clone(NEWUSER|NEWNS|NEWPID) ───────▶  re-exec of /proc/self/exe __sandbox-init
//	                                        make / private; move_mount the view
//	                                        over /dev and /sys/{block,class/block,
//	                                        dev/block}; devpts, shm, proc
//	                                        load the filter (NEW_LISTENER)
//	  receive listener fd  ◀──── SCM_RIGHTS
//	  serve notifications  ──── ack ─────▶  fork+exec CMD, reap, forward signals
//	  EPOLLHUP / init exit                  exit with CMD's status
//	  Instance.Close: detach, remove, journal
//
// The sandbox needs no help to enter its own namespaces, so `run` never
// calls setns from the (multithreaded) Go supervisor: the view reaches the
// sandbox as detached mounts (open_tree) that its single-purpose init
// attaches in its own mount namespace.
//
// Errors a container sees are computed in one place, loopctl.Errno. Logs
// come as one logrus entry per decision with fields instance, pid, syscall
// and the result.
package supervisor
