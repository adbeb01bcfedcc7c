// Package supervisor wires loopvisor together and owns lifecycles: it
// starts sandboxes, receives their seccomp listeners, serves their trapped
// calls against a loopctl.Instance, and releases everything when the
// sandbox's last process is gone.
//
// One way through for every request (serve.go): notify.Listener receives
// it, notify.Decode says which call it is in which ABI, handle decides
// whose it is (loopctl.Instance.Ioctl for loop and block ioctls,
// mountproxy.Proxy for mount, umount2, fsopen, fsconfig, fsmount and fspick), the handler acts on its
// own copies of the arguments and returns a notify.Reply, and Serve sends
// it. Sub-packages hold what is not lifecycle: ociconfig (rewriting a
// runtime's config.json), ociproto (the runtime's wire protocol to the
// agent), lxcproto and lxcconfig (LXC's seccomp notify proxy protocol and
// `loopvisor lxc-config`), sandboxinit (the init of a `loopvisor run`
// sandbox).
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
// Process model of `loopvisor agent` (OCI runtimes, listenerPath): the
// runtime connects once per process that loads the filter (init
// "creating", every exec "running") and passes its listener fd. The first
// listener of a container creates its instance (Agent.Attach, also the
// library entry point); nodes reach the container's own /dev as bind mounts
// made by nsexec inside its mount namespace, /dev/loop-control and
// /dev/fuse first come from the agent's tmpfs through config.json mounts
// (ociconfig.Rewrite), because the runtime does not wait for the agent. The
// instance ends when the last listener hangs up. Journals record the
// container's init, so a restarted agent keeps a live container's devices
// and collects them once it is gone.
//
// A container is its id together with its init's user, pid and mount
// namespaces, read on kernel objects (pidfd, then /proc/PID/ns inodes, then
// the pidfd checked alive): ids are unique only within one runtime's state
// root, and runc and crun may each run a "demo". A listener whose process
// the runtime names joins an instance only if that process is in the init's
// three namespaces; one it names no process for (crun exec sends pid 0)
// waits for its first trapped call and joins the instance whose namespaces
// are the caller's (NOTIF_ID_VALID after the reads pins the caller), or is
// refused. Setting up and releasing containers, which block in system calls
// (flock, nsexec, unmounts), run on a pool of a few workers, so that an
// exit burst of a thousand containers costs a few OS threads, not one each;
// the agent's mutex covers only its map of containers.
//
// The user socket (useragent.go, userns.go) serves unprivileged users:
// the peer is SO_PEERCRED/SO_PEERPIDFD, the container must be in user and
// mount namespaces the peer owns (NS_GET_OWNER_UID up the chain) with maps
// inside its sub-id ranges, and since no kernel query ties a listener to a
// process, Sandbox.Check vets every trapped call's caller. Such containers
// are keyed apart (containerKey.owner), get FUSE only, the view's
// /dev/null loop-control and limits charged to the peer. RunAsUser (userrun.go) is
// `loopvisor run` without root: newuidmap/newgidmap map the sandbox, the
// init re-execs itself to gain its capabilities in the new namespace, and
// the listener goes to the agent's user socket, whose answer it awaits.
//
// Process model of `loopvisor agent --lxc-socket` (LXC's
// lxc.seccomp.notify.proxy): LXC's monitor keeps the listener and sends
// each notification as one SOCK_SEQPACKET packet (lxcproto) with the
// caller's /proc/PID and /proc/PID/mem and the listener as fds; the agent
// answers each in order and LXC passes the answer to the kernel. The same
// path is the library entry point for managers that run their own proxy
// (Agent.HandleProxied): the notification goes through handle like any
// other, with notify.Observe wrapping the listener for ID checks only and
// the caller's memory read through the mem fd. An instance per container
// (init pid checked on a pidfd, then its namespaces) is created by the
// first notification and released when the init's pidfd polls readable
// (watched on the netpoller, no thread per container) or the monitor
// hangs up. /dev/loop-control and /dev/fuse reach the container from
// LXC's start-host hook (PublishLXCNodes), run as host root before the
// container's init starts.
//
// Errors a container sees are computed in one place, notify.ErrnoOf. Logs
// come as one logrus entry per decision with fields instance, pid, syscall
// and the result.
package supervisor
