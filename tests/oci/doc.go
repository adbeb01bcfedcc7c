// Package oci drives the OCI runtimes runc and crun for loopvisor's
// acceptance tests: it builds a small container root file system offline
// from the host's own programs (BuildRootfs, NewBundle) or unpacks a
// stock Debian image made by mmdebstrap and cached between runs
// (StockImage, NewStockBundle, StockRootfs; no FUSE helper inside), writes
// bundles whose config.json puts the
// container in a user namespace mapped to an unprivileged host uid, runs,
// execs into, kills and deletes containers under a private --root state
// directory, and speaks the receiving side of the runtime-spec seccomp
// agent protocol (linux.seccomp.listenerPath).
//
// Typical use (as host root):
//
//	rt, cleanup, err := oci.New("crun") // or "runc"
//	defer func() { err = cleanup() }()   // delete -f every container, remove --root
//	b, err := oci.NewBundle("/tmp/x-123", []string{"sleep", "100"})
//	b.SetCapabilities(oci.AllCapabilities...)
//	b.AllowLoopDevices()
//	b.SetSeccomp(oci.NotifySeccomp(sock, "meta", oci.IoctlNotify(oci.LoopIoctls...)...))
//	b.Save()
//	c, err := rt.Start(b)
//	res, err := c.Exec("losetup", "-a")
//
// On hosts with hybrid cgroups crun runs inside a private mount namespace
// without /sys/fs/cgroup/unified (Runtime.PrivateCgroupNS); the package
// never gives a runtime /dev/null as stdio because crun chowns its stdio
// to the container's root. See README.md for the facts measured here.
//
// When not to use it: for loopvisor's own `run` sandboxes (tests/ drives
// bin/loopvisor directly), or anywhere but a disposable test machine — it
// needs root and creates cgroups, namespaces and containers.
package oci
