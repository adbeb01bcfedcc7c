package view

import (
	"encoding/binary"
	"fmt"
	"github.com/loopvisor/loopvisor/internal/linux"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// View directories inside the view's tmpfs, and where a sandbox attaches
// them.
const (
	Dev       = "dev"
	SysBlock  = "sys-block"
	SysClass  = "sys-class-block"
	SysDev    = "sys-dev-block"
	viewNodes = "nodes" // supervisor-only: loop nodes are made here, then moved into dev/
)

// Mounts maps each view directory to the path a sandbox attaches it on.
var Mounts = []struct{ Dir, Target string }{
	{Dev, "/dev"},
	{SysBlock, "/sys/block"},
	{SysClass, "/sys/class/block"},
	{SysDev, "/sys/dev/block"},
}

// View is an instance's private /dev and sysfs block directories on a
// detached tmpfs that only the supervisor and the sandbox can reach.
type View struct {
	mu   sync.Mutex
	root *os.File // the tmpfs root (O_PATH-like directory fd)
	uid  int      // host uid of the sandbox's root
	gid  int

	// nodes holds an O_PATH handle on every loop node inode the view made,
	// by the loop index it points at, until the device leaves the
	// instance: Revoke reaches the inode through it whatever the sandbox
	// did to the names (renamed, hard-linked, bind-mounted, unlinked).
	nodes map[int][]*nodeInode
	// helperSeq names helper nodes uniquely.
	helperSeq int
	// The inode of the view's /dev/loop-control.
	ctlDev, ctlIno uint64
	// Where Persist attached the view ("" if not).
	persisted string
	// parts holds the partitions shown for each device (see sysfs.go).
	parts map[int]map[int]Part
	// loops are the devices shown as /dev/loopN.
	loops map[int]bool
	// procParts is the view's /proc/partitions (see procparts.go) and
	// procPartsData what it holds.
	procParts     *os.File
	procPartsData []byte

	// Publish, if set, is called after a device node appears in the view
	// with a detached mount of it (the caller owns it), and Unpublish
	// when it goes. A container whose /dev is not the view (an OCI
	// container's /dev is its own tmpfs) gets the node bind-mounted this
	// way. Both touch the container (its mount namespace, its /dev, which
	// it may have covered with a FUSE mount that never answers), so they
	// run on the view's own publisher goroutine, in order, never under a
	// lock: a stuck container stalls only its own publisher. Set them
	// before the first node is added.
	Publish   func(name string, node *os.File) error
	Unpublish func(name string)

	pubMu    sync.Mutex
	pubCond  *sync.Cond
	pubQueue []pubOp
	pubDone  map[string]chan struct{} // name -> closed once its last queued publish ran
	// pubWaits is len(pubDone), stored under pubMu: WaitPublished
	// returns at once without the lock when nothing is queued (a
	// trapped LOOP_CTL_GET_FREE of a shown device, every time).
	pubWaits atomic.Int32
	pubStop  bool
	pubAlive bool
}

// pubOp is one queued Publish (node != nil) or Unpublish.
type pubOp struct {
	name string
	node *os.File
	done chan struct{}
}

// enqueue queues a publish or unpublish; it never blocks.
func (v *View) enqueue(name string, node *os.File) {
	v.pubMu.Lock()
	defer v.pubMu.Unlock()
	if v.pubStop {
		if node != nil {
			_ = node.Close()
		}
		return
	}
	if v.pubCond == nil {
		v.pubCond = sync.NewCond(&v.pubMu)
		v.pubDone = map[string]chan struct{}{}
	}
	op := pubOp{name: name, node: node, done: make(chan struct{})}
	v.pubDone[name] = op.done
	v.pubWaits.Store(int32(len(v.pubDone)))
	v.pubQueue = append(v.pubQueue, op)
	if !v.pubAlive {
		v.pubAlive = true
		go v.publisher()
	}
	v.pubCond.Signal()
}

// publisher runs the queued Publish and Unpublish calls in order.
func (v *View) publisher() {
	v.pubMu.Lock()
	for {
		for len(v.pubQueue) == 0 && !v.pubStop {
			v.pubCond.Wait()
		}
		if len(v.pubQueue) == 0 {
			v.pubAlive = false
			v.pubMu.Unlock()
			return
		}
		op := v.pubQueue[0]
		v.pubQueue = v.pubQueue[1:]
		stopping := v.pubStop
		v.pubMu.Unlock()
		switch {
		case op.node != nil && !stopping && v.Publish != nil:
			if err := v.Publish(op.name, op.node); err != nil {
				_ = err // the container's /dev refused it; its problem, logged by Publish
			}
			_ = op.node.Close()
		case op.node != nil:
			_ = op.node.Close()
		case !stopping && v.Unpublish != nil:
			v.Unpublish(op.name)
		}
		close(op.done)
		v.pubMu.Lock()
		if v.pubDone[op.name] == op.done {
			delete(v.pubDone, op.name)
			v.pubWaits.Store(int32(len(v.pubDone)))
		}
	}
}

// Publishing reports whether a publish or unpublish is queued or
// running: WaitPublished returns at once while it is not, so a hot path
// can skip building the name.
func (v *View) Publishing() bool { return v.pubWaits.Load() != 0 }

// WaitPublished waits until the last queued publish or unpublish of name
// has run, or d has passed. Preconditions: no lock held that a container
// could stall (it waits on the container).
func (v *View) WaitPublished(name string, d time.Duration) bool {
	if v.pubWaits.Load() == 0 {
		return true
	}
	v.pubMu.Lock()
	done := v.pubDone[name]
	v.pubMu.Unlock()
	if done == nil {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// NewView creates the tmpfs and the usual container device nodes, owned by
// the host uid/gid the sandbox's root maps to.
func New(uid, gid int) (*View, error) {
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("fsopen(tmpfs)", err)
	}
	defer func() { _ = unix.Close(fsfd) }()
	if err := unix.FsconfigSetString(fsfd, "mode", "0755"); err != nil {
		return nil, os.NewSyscallError("fsconfig(mode)", err)
	}
	if err := unix.FsconfigSetString(fsfd, "size", "1m"); err != nil {
		return nil, os.NewSyscallError("fsconfig(size)", err)
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return nil, os.NewSyscallError("fsconfig(create)", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("fsmount(tmpfs)", err)
	}
	v := &View{root: os.NewFile(uintptr(mfd), "loopvisor-view"), uid: uid, gid: gid, nodes: map[int][]*nodeInode{}, loops: map[int]bool{}}
	if err := v.populate(); err != nil {
		_ = v.Close()
		return nil, err
	}
	if err := v.makeProcFiles(); err != nil {
		_ = v.Close()
		return nil, err
	}
	return v, nil
}

// Close drops the supervisor's reference; the tmpfs goes away once the
// sandbox's mounts of it are gone too. Loop nodes still in the view are
// revoked first: nothing the sandbox kept of them opens again.
func (v *View) Close() error {
	v.mu.Lock()
	for idx, ns := range v.nodes {
		for _, n := range ns {
			_ = n.revoke()
			_ = n.f.Close()
		}
		delete(v.nodes, idx)
	}
	persisted := v.persisted
	if v.procParts != nil {
		_ = v.procParts.Close()
		v.procParts = nil
	}
	v.mu.Unlock()
	v.pubMu.Lock()
	v.pubStop = true
	if v.pubCond != nil {
		v.pubCond.Broadcast()
	}
	v.pubMu.Unlock()
	if persisted != "" {
		_ = unix.Unmount(persisted, unix.MNT_DETACH)
		_ = os.Remove(persisted)
	}
	return v.root.Close()
}

// Persist attaches a clone of the view at dir (created; its parent must be
// reachable by root only) until Close, so that a later process (gc, after
// this supervisor was killed) can revoke every node the view made
// (RevokePersisted). Every node inode keeps a name in the view's
// supervisor-only directory, which the sandbox cannot remove.
func (v *View) Persist(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	fd, err := unix.OpenTree(v.fd(), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		_ = os.Remove(dir)
		return os.NewSyscallError("open_tree view", err)
	}
	defer func() { _ = unix.Close(fd) }()
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		_ = os.Remove(dir)
		return os.NewSyscallError("move_mount view", err)
	}
	v.mu.Lock()
	v.persisted = dir
	v.mu.Unlock()
	return nil
}

// RevokePersisted revokes every loop node (block device inode) of a view a
// dead supervisor persisted at dir, whatever names the sandbox gave them
// (each inode also has a name in the supervisor-only directory), then
// detaches the view and removes dir. It returns how many inodes it
// revoked. A dir that does not exist is not an error.
func RevokePersisted(dir string) (int, error) {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		if err == unix.ENOENT {
			return 0, nil
		}
		return 0, err
	}
	n := 0
	var first error
	// Only the supervisor-only directory: every node inode has a name
	// there, and nothing the sandbox made is walked.
	nodes := filepath.Join(dir, viewNodes)
	ents, err := os.ReadDir(nodes)
	if err != nil && !os.IsNotExist(err) {
		first = err
	}
	for _, e := range ents {
		if e.Type()&os.ModeDevice == 0 || e.Type()&os.ModeCharDevice != 0 {
			continue
		}
		fd, err := unix.Open(filepath.Join(nodes, e.Name()), unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		ni := &nodeInode{f: os.NewFile(uintptr(fd), e.Name())}
		if err := ni.revoke(); err != nil && first == nil {
			first = err
		} else if err == nil {
			n++
		}
		_ = ni.f.Close()
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && err != unix.EINVAL && first == nil {
		first = os.NewSyscallError("umount "+dir, err)
	}
	if err := os.Remove(dir); err != nil && first == nil {
		first = err
	}
	return n, first
}

func (v *View) fd() int { return int(v.root.Fd()) }

// IsControl reports whether st is the view's /dev/loop-control node (by
// inode: bind mounts and hard links of it are it too).
func (v *View) IsControl(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Dev == v.ctlDev && st.Ino == v.ctlIno
}

func (v *View) populate() error {
	for _, d := range []string{Dev, SysBlock, SysClass, SysDev} {
		if err := unix.Mkdirat(v.fd(), d, 0o755); err != nil {
			return os.NewSyscallError("mkdir "+d, err)
		}
	}
	if err := unix.Mkdirat(v.fd(), viewNodes, 0o700); err != nil {
		return os.NewSyscallError("mkdir "+viewNodes, err)
	}
	if err := unix.Fchownat(v.fd(), Dev, v.uid, v.gid, 0); err != nil {
		return err
	}
	type node struct {
		name         string
		major, minor uint32
		mode         uint32
	}
	for _, n := range []node{
		{"null", 1, 3, 0o666}, {"zero", 1, 5, 0o666}, {"full", 1, 7, 0o666},
		{"random", 1, 8, 0o666}, {"urandom", 1, 9, 0o666}, {"tty", 5, 0, 0o666},
	} {
		if err := v.mknod(Dev+"/"+n.name, unix.S_IFCHR|n.mode, n.major, n.minor, v.uid, v.gid); err != nil {
			return err
		}
	}
	// /dev/fuse is what a FUSE helper needs; the host decides whether it
	// exists.
	if _, err := os.Stat("/dev/fuse"); err == nil {
		if err := v.mknod(Dev+"/fuse", unix.S_IFCHR|0o666, linux.FuseMajor, linux.FuseMinor, v.uid, v.gid); err != nil {
			return err
		}
	}
	// Not the kernel's loop-control: a /dev/null node. Its fd outside the
	// container's filter is worth nothing; the supervisor knows it by its
	// inode (IsControl) and serves the container's trapped commands on
	// it. util-linux and busybox only need it to exist and open.
	if err := v.mknod(Dev+"/loop-control", unix.S_IFCHR|0o600, linux.NullMajor, linux.NullMinor, v.uid, v.gid); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(v.fd(), Dev+"/loop-control", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	v.ctlDev, v.ctlIno = st.Dev, st.Ino
	for _, d := range []string{"pts", "shm"} {
		if err := unix.Mkdirat(v.fd(), Dev+"/"+d, 0o755); err != nil {
			return err
		}
		if err := unix.Fchownat(v.fd(), Dev+"/"+d, v.uid, v.gid, 0); err != nil {
			return err
		}
	}
	for name, target := range map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
		"stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx", "core": "/proc/kcore",
	} {
		if err := v.symlink(target, Dev+"/"+name); err != nil {
			return err
		}
	}
	// Non-loop block devices stay visible in sysfs, as they are to any
	// process on the host; loop devices appear only when the instance owns
	// them.
	for _, d := range []struct{ view, sys string }{
		{SysBlock, "block"}, {SysClass, "class/block"}, {SysDev, "dev/block"},
	} {
		ents, err := os.ReadDir(filepath.Join(linux.SysRoot, d.sys))
		if err != nil {
			continue
		}
		for _, e := range ents {
			link, err := os.Readlink(filepath.Join(linux.SysRoot, d.sys, e.Name()))
			if err != nil || strings.Contains(link, "/block/loop") {
				continue
			}
			if err := v.symlink(link, d.view+"/"+e.Name()); err != nil {
				return err
			}
		}
	}
	return nil
}

func (v *View) mknod(path string, mode uint32, major, minor uint32, uid, gid int) error {
	if err := unix.Mknodat(v.fd(), path, mode, int(unix.Mkdev(major, minor))); err != nil {
		return os.NewSyscallError("mknod "+path, err)
	}
	// mknod applies the umask; set the mode the node must have.
	if err := unix.Fchmodat(v.fd(), path, mode&0o7777, 0); err != nil {
		return err
	}
	if uid != 0 || gid != 0 {
		return unix.Fchownat(v.fd(), path, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

func (v *View) symlink(target, path string) error {
	if err := unix.Symlinkat(target, v.fd(), path); err != nil && err != unix.EEXIST {
		return os.NewSyscallError("symlink "+path, err)
	}
	if strings.HasPrefix(path, Dev+"/") {
		return unix.Fchownat(v.fd(), path, v.uid, v.gid, unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

// remove unlinks path in the view. An error is ignored: the sandbox may
// have removed or replaced the name (its /dev is its own), and nothing
// depends on the name any more (inodes are revoked through their fds).
func (v *View) remove(path string) {
	_ = unix.Unlinkat(v.fd(), path, 0)
}

// removeIfOurs unlinks dev/name if it is still one of the inodes made for
// loop index idx (the sandbox owns dev/ and may have put its own file
// there). Preconditions: v.mu held.
func (v *View) removeIfOurs(name string, idx int) {
	var st unix.Stat_t
	if unix.Fstatat(v.fd(), Dev+"/"+name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return
	}
	for _, n := range v.nodes[idx] {
		if n.ino == st.Ino {
			v.remove(Dev + "/" + name)
			return
		}
	}
}

// AddLoop makes loop device idx visible in the sandbox: /dev/loopN (mode
// and group as on the host, owned by the sandbox's root) and its sysfs links.
func (v *View) AddLoop(idx int) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	name := "loop" + strconv.Itoa(idx)
	if err := v.addNode(name, idx); err != nil {
		return err
	}
	for _, l := range []struct{ path, target string }{
		{SysBlock + "/" + name, "../devices/virtual/block/" + name},
		{SysClass + "/" + name, "../../devices/virtual/block/" + name},
		{fmt.Sprintf("%s/%d:%d", SysDev, linux.LoopMajor, idx), "../../devices/virtual/block/" + name},
	} {
		if err := v.symlink(l.target, l.path); err != nil {
			return err
		}
	}
	v.loops[idx] = true
	v.refreshPartitions()
	return nil
}

// RemoveLoop hides loop device idx from the sandbox and revokes every
// node inode made for it (see Revoke); the device has left the instance.
func (v *View) RemoveLoop(idx int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	name := "loop" + strconv.Itoa(idx)
	if v.Unpublish != nil {
		v.enqueue(name, nil)
	}
	v.removeIfOurs(name, idx)
	for _, n := range v.nodes[idx] {
		_ = n.revoke()
		_ = n.f.Close()
		v.remove(keepName(n.ino))
	}
	delete(v.nodes, idx)
	v.removeDisk(idx)
	delete(v.loops, idx)
	v.refreshPartitions()
}

// Clone returns a detached mount of path in the view (a directory of
// Mounts, a file of ProcFiles or a node under dev/), for the sandbox to
// attach with move_mount.
func (v *View) Clone(dir string) (*os.File, error) {
	if dir == ProcPartitions {
		procPartitionsUsed.Store(true)
		v.RefreshPartitions()
	}
	fd, err := unix.OpenTree(v.fd(), dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("open_tree "+dir, err)
	}
	return os.NewFile(uintptr(fd), "view-"+dir), nil
}

// hostNodeMode returns the permission bits and group of the host's node for
// loop device idx (or of /dev/loop0), so the sandbox's node looks the same.
func hostNodeMode(idx int) (uint32, int) {
	for _, p := range []string{"/dev/loop" + strconv.Itoa(idx), "/dev/loop0"} {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			gid := int(st.Gid)
			if gid > 65535 {
				gid = 0
			}
			return st.Mode & 0o777, gid
		}
	}
	return 0o660, 6
}

// nodeInode is one loop node inode the view made.
type nodeInode struct {
	f    *os.File // O_PATH
	ino  uint64
	mode uint32 // the host's permission bits
	gid  int    // host gid of the node's group
	uid  int    // host uid of the sandbox's root
}

// POSIX ACL xattr format (include/uapi/linux/posix_acl_xattr.h).
const (
	aclXattr    = "system.posix_acl_access"
	aclVersion  = 2
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclMask     = 0x10
	aclOther    = 0x20
	aclNoID     = 0xffffffff
)

func (n *nodeInode) procPath() string { return "/proc/self/fd/" + strconv.Itoa(int(n.f.Fd())) }

// grant gives the node its access: owner host root (0, unmapped in the
// sandbox, so the sandbox's root can neither chmod nor chown it back after
// a revoke), the host node's group, and the host node's mode bits, with an
// ACL entry that gives the sandbox's root the owner's bits (it opens its
// own nodes as host root opens the host's). Users of the sandbox in the
// mapped group get the group bits, others the other bits: what the same
// users get on the host.
func (n *nodeInode) grant() error {
	if err := unix.Fchownat(int(n.f.Fd()), "", 0, n.gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return os.NewSyscallError("fchownat", err)
	}
	owner, group, other := uint16(n.mode>>6&7), uint16(n.mode>>3&7), uint16(n.mode&7)
	le := binary.LittleEndian
	acl := le.AppendUint32(nil, aclVersion)
	for _, e := range []struct {
		tag, perm uint16
		id        uint32
	}{
		{aclUserObj, owner, aclNoID}, {aclUser, owner, uint32(n.uid)}, {aclGroupObj, group, aclNoID},
		{aclMask, owner | group, aclNoID}, {aclOther, other, aclNoID},
	} {
		acl = le.AppendUint16(acl, e.tag)
		acl = le.AppendUint16(acl, e.perm)
		acl = le.AppendUint32(acl, e.id)
	}
	if err := unix.Setxattr(n.procPath(), aclXattr, acl, 0); err != nil {
		return os.NewSyscallError("setxattr "+aclXattr, err)
	}
	return nil
}

// revoke makes the inode open for nobody but host root: owner and group
// 0:0, mode 000 (with an ACL, mode 000 also masks the sandbox root's
// entry). Every name, hard link, bind mount and O_PATH fd of the inode is
// then dead, and the sandbox cannot undo it.
func (n *nodeInode) revoke() error {
	if err := unix.Fchownat(int(n.f.Fd()), "", 0, 0, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return os.NewSyscallError("fchownat", err)
	}
	if err := unix.Chmod(n.procPath(), 0); err != nil {
		return os.NewSyscallError("chmod", err)
	}
	return nil
}

// keepName is the supervisor-only name of a node inode.
func keepName(ino uint64) string { return viewNodes + "/keep-" + strconv.FormatUint(ino, 10) }

// addNode makes /dev/name for loop device idx and publishes it: a fresh
// inode each time, made in the supervisor-only directory, granted (see
// grant) before the sandbox can reach it, then moved into dev/.
// Preconditions: v.mu held.
func (v *View) addNode(name string, idx int) error {
	mode, gid := hostNodeMode(idx)
	tmp := viewNodes + "/" + name
	v.remove(tmp)
	// Mode 0 until granted; mknod's umask does not matter.
	if err := unix.Mknodat(v.fd(), tmp, unix.S_IFBLK, int(unix.Mkdev(linux.LoopMajor, uint32(idx)))); err != nil {
		return os.NewSyscallError("mknod "+tmp, err)
	}
	fd, err := unix.Openat(v.fd(), tmp, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		v.remove(tmp)
		return os.NewSyscallError("open "+tmp, err)
	}
	n := &nodeInode{f: os.NewFile(uintptr(fd), name), mode: mode, gid: v.gid + gid, uid: v.uid}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = n.f.Close()
		v.remove(tmp)
		return err
	}
	n.ino = st.Ino
	v.nodes[idx] = append(v.nodes[idx], n)
	if err := n.grant(); err != nil {
		v.remove(tmp)
		return err
	}
	// A name of the inode the sandbox cannot remove: a gc after a killed
	// supervisor finds every node through it (RevokePersisted).
	if err := unix.Linkat(v.fd(), tmp, v.fd(), keepName(n.ino), 0); err != nil {
		v.remove(tmp)
		return os.NewSyscallError("link "+name, err)
	}
	v.remove(Dev + "/" + name)
	if err := unix.Renameat(v.fd(), tmp, v.fd(), Dev+"/"+name); err != nil {
		v.remove(tmp)
		return os.NewSyscallError("rename "+name, err)
	}
	if v.Publish == nil {
		return nil
	}
	cfd, err := unix.OpenTree(fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return os.NewSyscallError("open_tree "+name, err)
	}
	v.enqueue(name, os.NewFile(uintptr(cfd), "view-"+name))
	return nil
}

// Revoke makes every node inode made for loop device idx unopenable (see
// nodeInode.revoke), before the device may leave the instance: a reference
// the sandbox kept to a node then never reaches whatever gets index idx
// next, nor makes the kernel create it again. Grant undoes it when the
// device stays after all (LOOP_CTL_REMOVE failed). An error means some
// inode may still open: the device must not leave.
func (v *View) Revoke(idx int) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	var first error
	for _, n := range v.nodes[idx] {
		if err := n.revoke(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Grant restores the access Revoke took from the nodes of idx.
func (v *View) Grant(idx int) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	var first error
	for _, n := range v.nodes[idx] {
		if err := n.grant(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// HelperNode makes a node of loop device idx for a FUSE helper serving it:
// a fresh inode in the supervisor-only directory, owned by host root with
// an ACL entry that lets the sandbox's root (the helper's identity) read
// it, and write it unless readOnly; nobody else may open it, and the
// sandbox cannot chmod it. It is one of idx's inodes, so Revoke(idx) kills
// it before the device leaves the instance; release revokes and unlinks it
// at once (call it when the helper has exited). The returned O_PATH fd is
// the caller's.
func (v *View) HelperNode(idx int, readOnly bool) (node *os.File, release func(), err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.helperSeq++
	name := "helper-loop" + strconv.Itoa(idx) + "-" + strconv.Itoa(v.helperSeq)
	tmp := viewNodes + "/" + name
	if err := unix.Mknodat(v.fd(), tmp, unix.S_IFBLK, int(unix.Mkdev(linux.LoopMajor, uint32(idx)))); err != nil {
		return nil, nil, os.NewSyscallError("mknod "+tmp, err)
	}
	fd, err := unix.Openat(v.fd(), tmp, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		v.remove(tmp)
		return nil, nil, os.NewSyscallError("open "+tmp, err)
	}
	mode := uint32(0o600)
	if readOnly {
		mode = 0o400
	}
	n := &nodeInode{f: os.NewFile(uintptr(fd), name), mode: mode, gid: 0, uid: v.uid}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = n.f.Close()
		v.remove(tmp)
		return nil, nil, err
	}
	n.ino = st.Ino
	v.nodes[idx] = append(v.nodes[idx], n)
	if err := n.grant(); err != nil {
		_ = n.revoke()
		v.remove(tmp)
		return nil, nil, err
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		_ = n.revoke()
		v.remove(tmp)
		return nil, nil, err
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			v.mu.Lock()
			defer v.mu.Unlock()
			_ = n.revoke() // stays in v.nodes[idx]: Revoke(idx) covers it again
			v.remove(tmp)
		})
	}
	return os.NewFile(uintptr(dup), name), release, nil
}

// FuseNode returns an O_PATH fd of a /dev/fuse node in the view's
// supervisor-only directory (owned by host root, mode 0666: what a FUSE
// helper opens). It is made on first use and goes with the view.
func (v *View) FuseNode() (*os.File, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	path := viewNodes + "/fuse"
	want := unix.Mkdev(linux.FuseMajor, linux.FuseMinor)
	var st unix.Stat_t
	if err := unix.Fstatat(v.fd(), path, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Rdev != want {
		v.remove(path)
		if err := unix.Mknodat(v.fd(), path, unix.S_IFCHR|0o666, int(want)); err != nil {
			return nil, os.NewSyscallError("mknod "+path, err)
		}
		if err := unix.Fchmodat(v.fd(), path, 0o666, 0); err != nil {
			return nil, os.NewSyscallError("chmod "+path, err)
		}
	}
	fd, err := unix.Openat(v.fd(), path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("open "+path, err)
	}
	return os.NewFile(uintptr(fd), "fuse"), nil
}
