package tests

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/internal/devcgroup"
	"github.com/loopvisor/loopvisor/mountproxy/nsexec"
)

// pidWithArg returns the host pid of a process in another mount namespace
// than the test's whose command line holds arg, waiting up to d for one to
// appear.
func pidWithArg(t *testing.T, arg string, d time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil || !strings.Contains(string(b), arg) {
				continue
			}
			ns, err1 := os.Readlink("/proc/" + e.Name() + "/ns/mnt")
			own, err2 := os.Readlink("/proc/self/ns/mnt")
			if err1 == nil && err2 == nil && ns != own {
				return pid
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no process with %q in its command line", arg)
	return 0
}

// TestAttackFspickStaleHelperDev: a FUSE helper's superblock is known to
// loopvisor by its device number (0:N), which the kernel gives to the next
// superblock once the old one is gone. The container stops its helper
// (SIGSTOP: it runs as the container's root, in its pid namespace) and
// detaches the mount (umount -l): the superblock goes, the helper is still
// "live". A superblock the container does not own then takes the number:
// here a tmpfs that host root mounts into the container's mount namespace
// (as an engine adds a volume to a running container). fspick of it,
// "ro" and FSCONFIG_CMD_RECONFIGURE must be the kernel's answer, EPERM
// (the superblock belongs to the initial user namespace), and the tmpfs
// stays writable. Before the fix loopvisor took it for the helper's mount
// and reconfigured it read-only as host root ("reconfigure OK", sb=ro).
// Without loopvisor the FUSE mount is not there.
func TestAttackFspickStaleHelperDev(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	dir, state := workDir(t), stateDir(t)
	fsImage(t, dir, "fs.img", "mkfs.ext4", 32<<20)
	sandboxMkdir(t, dir, "mnt")
	// The marker is put together by the shell: the script itself is on
	// loopvisor's command line, in the host's mount namespace.
	marker := fmt.Sprintf("fspick-stale-wait-%d", os.Getpid())
	script := `d=$(losetup -f --show fs.img) || exit 1
mount $d mnt || exit 1
mountpoint -d mnt > dev.tmp && mv dev.tmp dev
h=$(pgrep -x fuse2fs) || exit 1
kill -STOP $h || exit 1
umount -l mnt || exit 1
echo freed > freed
m=fspick-stale; sh -c 'while [ ! -e ready ]; do sleep 0.1; done' "$m-wait-` + strconv.Itoa(os.Getpid()) + `"
v=$(cat ready)
if [ "$v" != none ]; then
	fspickro "$v" ro
	echo "sb=$(findmnt -n -o FS-OPTIONS "$v" | cut -d, -f1)"
fi
kill -CONT $h; kill $h
losetup -d $d; echo "detach $?"`
	out := sandboxAsync(dir, state, nil, script)
	dev := waitFile(t, filepath.Join(dir, "dev"), time.Minute)
	waitFile(t, filepath.Join(dir, "freed"), time.Minute)
	pid := pidWithArg(t, marker, time.Minute)
	// Host root mounts tmpfs file systems into the container's mount
	// namespace until one gets the helper's old device number (the
	// kernel hands out the lowest free one; the others fill the holes
	// below it and go with the namespace).
	victim := "none"
	for i := 0; i < 400 && victim == "none"; i++ {
		v := filepath.Join(dir, fmt.Sprintf("victim%d", i))
		check(t, os.Mkdir(v, 0o755))
		if r := run(t, "/", "nsenter", "-t", strconv.Itoa(pid), "-m", "--", "mount", "-t", "tmpfs", "victim", v); r.Code != 0 {
			t.Errorf("mount tmpfs in the container: %s", r)
			break
		}
		r := run(t, "/", "nsenter", "-t", strconv.Itoa(pid), "-m", "--", "mountpoint", "-d", v)
		if strings.TrimSpace(r.Stdout) == dev {
			victim = v
		}
	}
	check(t, os.WriteFile(filepath.Join(dir, "ready"), []byte(victim), 0o644))
	o := <-out
	check(t, o.err)
	if victim == "none" {
		t.Fatalf("set-up: no tmpfs got the helper's old device %s (another process took it); sandbox:\n%s", dev, o.r)
	}
	if o.r.Code != 0 || !strings.Contains(o.r.Stdout, "fspick OK\nset OK\n") || !strings.Contains(o.r.Stdout, "detach 0\n") {
		t.Fatalf("set-up: the container should pick the tmpfs and detach its device:\n%s", o.r)
	}
	if !strings.Contains(o.r.Stdout, "reconfigure EPERM\nsb=rw\n") {
		t.Errorf("a tmpfs of host root that took a dead helper's device number was reconfigured on the container's behalf (want the kernel's EPERM and sb=rw):\n%s", o.r)
	}
	bareFails(t, dir, state, "d=$(losetup -f --show fs.img) && mount $d mnt")
}

// TestAttackFspickKernelOptions: fsconfig on a reconfiguration context of
// a kernel mount (--allow-kernel-mount ext4) with what the allow-list
// keeps out (errors=panic, abort, dax, resuid=, source, journal_dev=),
// per-mount flags as parameters (suid, dev), path, descriptor and binary
// parameters, hostile pointers and sizes (fspickopts params): each is
// refused (EINVAL; EFAULT for a bad pointer) and the reconfiguration
// changes nothing of it: the mount stays nosuid,nodev and the superblock
// has no errors=panic. Host root's ext4 takes errors=panic, abort, dax,
// resuid=0 and source, so the refusals are loopvisor's. Then errors=panic
// slipped onto the caller's descriptor of the context by swapping its
// number with a tmpfs context's while fsconfig is trapped (fspickopts
// race: the kernel takes it on the caller's descriptor) must not reach the
// superblock either: loopvisor reconfigures its own context, never the
// caller's. Without loopvisor the device is not there.
func TestAttackFspickKernelOptions(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	hostDir, dir, state := ext4Dirs(t, "mnt")
	host := hostScript(t, hostDir, `d=$(losetup -f --show fs.img) || exit 1
mount $d mnt || exit 1
fspickopts params mnt
umount mnt; losetup -d $d`)
	for _, want := range []string{"errors=panic OK\n", "abort OK\n", "dax OK\n", "resuid=0 OK\n", "source OK\n"} {
		if !strings.Contains(host, want) {
			t.Fatalf("set-up: host root's ext4 should give %q:\n%s", want, host)
		}
	}
	script := `d=$(losetup -f --show fs.img) || exit 1
mount $d mnt || exit 1
fspickopts params mnt
fspickopts race mnt
umount mnt; echo "umount $?"
losetup -d $d; echo "detach $?"`
	flags := []string{"--allow-kernel-mount", "ext4"}
	sb := sandboxOK(t, dir, state, flags, script)
	params, race, ok := strings.Cut(sb, "fspick OK\nslipped ")
	if !ok || !strings.HasPrefix(params, "fspick OK\n") || !strings.HasSuffix(sb, "umount 0\ndetach 0\n") {
		t.Fatalf("set-up: both probes should pick the mount and the device should go:\n%s", sb)
	}
	refused := map[string]string{"errors=panic": "EINVAL", "abort": "EINVAL", "dax": "EINVAL", "resuid=0": "EINVAL",
		"source": "EINVAL", "suid": "EINVAL", "dev": "EINVAL", "journal_path": "EINVAL", "journal_dev": "EINVAL",
		"set-fd": "EINVAL", "binary": "EINVAL", "key-fault": "EFAULT", "value-fault": "EFAULT", "key-long": "EINVAL",
		"value-long": "EINVAL", "key-edge": "EFAULT", "binary-huge": "EINVAL", "badcmd": "EOPNOTSUPP", "reconfigure": "OK"}
	for name, errno := range refused {
		if !strings.Contains(params, "\n"+name+" "+errno+"\n") {
			t.Errorf("%s: want %s:\n%s", name, errno, params)
		}
	}
	if n, _, _ := strings.Cut(race, "\n"); n == "0" {
		t.Fatalf("set-up: no fsconfig slipped onto the caller's descriptor; the race proves nothing:\n%s", sb)
	}
	if !strings.Contains(race, "\nreconfigure OK\n") {
		t.Errorf("the reconfiguration after the race should succeed:\n%s", race)
	}
	for _, part := range []string{params, race} {
		for _, l := range strings.Split(part, "\n") {
			if o, ok := strings.CutPrefix(l, "mount "); ok && (!strings.Contains(","+o+",", ",nosuid,") || !strings.Contains(","+o+",", ",nodev,")) {
				t.Errorf("the kernel mount lost nosuid or nodev: %s", l)
			}
			if o, ok := strings.CutPrefix(l, "super "); ok && (strings.Contains(o, "errors=panic") || !strings.Contains(o, "errors=remount-ro")) {
				t.Errorf("the superblock took an option outside the allow-list: %s", l)
			}
		}
		if !strings.Contains(part, "\nmount ") || !strings.Contains(part, "\nsuper ") {
			t.Errorf("no mountinfo line for the mount:\n%s", part)
		}
	}
	bareFails(t, dir, state, script)
}

// TestAttackFspickContextPassedOut: sandbox A (uid 100000) picks its
// served mount and passes the reconfiguration context over a unix socket
// (SCM_RIGHTS) to sandbox B (uid 200000, another tenant under its own
// loopvisor), which sets "ro" and reconfigures: the kernel's EPERM, as for
// any holder without CAP_SYS_ADMIN in the superblock's user namespace (A's
// for a FUSE mount, the initial one for a kernel mount), and fsmount and
// create are refused too. A's mount stays writable. Both policies. Without
// loopvisor A's device is not there.
func TestAttackFspickContextPassedOut(t *testing.T) {
	needRoot(t)
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			hostGuard(t)
			dirA, dirB, state := workDir(t), workDir(t), stateDir(t)
			check(t, os.Chown(dirB, OtherUID, OtherUID))
			sockDir := workDir(t)
			check(t, os.Chmod(sockDir, 0o777))
			sock := filepath.Join(sockDir, "s")
			fsImage(t, dirA, "fs.img", "mkfs.ext4", 32<<20)
			sandboxMkdir(t, dirA, "mnt")
			b := make(chan outcome, 1)
			go func() {
				r, err := command(dirB, loopvisor, "run", "--state-dir", state,
					"--uid-map", fmt.Sprintf("%d:65536", OtherUID), "--gid-map", fmt.Sprintf("%d:65536", OtherUID), "--",
					"sh", "-c", "fspickpass recv "+sock+" ro")
				b <- outcome{r, err}
			}()
			script := `d=$(losetup -f --show fs.img) || exit 1
mount $d mnt || exit 1
while [ ! -S ` + sock + ` ]; do sleep 0.05; done
fspickpass send ` + sock + ` mnt; echo "send $?"
echo "sb=$(findmnt -n -o FS-OPTIONS mnt | cut -d, -f1) write=$(touch mnt/probe 2>/dev/null && echo OK || echo refused)"
umount mnt; echo "umount $?"
losetup -d $d; echo "detach $?"`
			a := sandboxOK(t, dirA, state, p.flags, script)
			ob := <-b
			check(t, ob.err)
			if !strings.Contains(a, "fspick OK\nconnect OK\nsendmsg OK\nsend 0\n") || !strings.Contains(ob.r.Stdout, "received anon_inode:[fscontext]\n") {
				t.Fatalf("set-up: A should pass its context to B:\n%s\n--- B\n%s", a, ob.r)
			}
			for _, want := range []string{"reconfigure EPERM\n", "create EBUSY\n"} {
				if !strings.Contains(ob.r.Stdout, want) {
					t.Errorf("B, holding A's context, should get %q:\n%s", want, ob.r)
				}
			}
			if strings.Contains(ob.r.Stdout, "fsmount OK") {
				t.Errorf("B made a mount of A's superblock:\n%s", ob.r)
			}
			if !strings.Contains(a, "sb=rw write=OK\numount 0\ndetach 0\n") {
				t.Errorf("A's mount should stay writable and go:\n%s", a)
			}
			bareFails(t, dirA, state, "d=$(losetup -f --show fs.img) && mount $d mnt")
		})
	}
}

// TestAttackFspickPinsSuperblock: the contexts loopvisor keeps for an
// fspick keep the superblock active. A container picks a served mount
// below a tmpfs, closes the context, detaches the tmpfs (umount -l, which
// takes the mount below with it) and detaches the device: on the host the
// superblock goes with its last mount, the device is free and can be
// attached again. Before the fix loopvisor's contexts kept it (and with it
// the device, bound to the image, and for FUSE the helper) until the
// sandbox ended: the device stayed bound and a new attach got EBUSY. Both
// policies.
func TestAttackFspickPinsSuperblock(t *testing.T) {
	needRoot(t)
	script := `mkdir -p top && mount -t tmpfs none top && mkdir top/mnt || exit 1
d=$(losetup -f --show fs.img) || exit 1
mount $d top/mnt || exit 1
fspickro top/mnt -
umount -l top; echo "umount-l $?"
losetup -d $d; echo "detach $?"
n=0; while [ $n -lt 400 ] && [ -e /sys/block/${d#/dev/}/loop/backing_file ]; do sleep 0.05; n=$((n+1)); done
echo "bound=$(cat /sys/block/${d#/dev/}/loop/backing_file 2>/dev/null | wc -l)"
losetup $d fs.img; echo "reattach $?"
losetup -d $d; echo "left $(losetup -a | grep -c fs.img)"`
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			hostGuard(t)
			hostDir, dir, state := ext4Dirs(t)
			host := hostScript(t, hostDir, script)
			if !strings.Contains(host, "fspick OK\numount-l 0\ndetach 0\nbound=0\nreattach 0\nleft 0\n") {
				t.Fatalf("set-up: on the host the device should be free after the lazy umount:\n%s", host)
			}
			diffLines(t, host, sandboxOK(t, dir, state, p.flags, script))
			bareFails(t, dir, state, script)
		})
	}
}

// supervisorOf returns the loopvisor process above pid in the test's
// mount namespace (the sandbox's init is loopvisor too).
func supervisorOf(t *testing.T, pid int) int {
	t.Helper()
	own, err := os.Readlink("/proc/self/ns/mnt")
	check(t, err)
	for p := pid; p > 1; {
		exe, err1 := os.Readlink("/proc/" + strconv.Itoa(p) + "/exe")
		ns, err2 := os.Readlink("/proc/" + strconv.Itoa(p) + "/ns/mnt")
		if err1 == nil && err2 == nil && exe == loopvisor && ns == own {
			return p
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/status")
		if err != nil {
			break
		}
		_, rest, _ := strings.Cut(string(b), "\nPPid:")
		line, _, _ := strings.Cut(rest, "\n")
		if p, err = strconv.Atoi(strings.TrimSpace(line)); err != nil {
			break
		}
	}
	t.Fatalf("no loopvisor process above %d", pid)
	return 0
}

func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	check(t, err)
	return len(ents)
}

// TestAttackFspickFlood: 5,000 fspick contexts of a served mount, each
// closed by the caller (which loopvisor cannot see): the supervisor's
// descriptors stay bounded (it keeps at most 16 contexts, two descriptors
// each), and the mount still unmounts and the device goes. Both policies.
func TestAttackFspickFlood(t *testing.T) {
	needRoot(t)
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			hostGuard(t)
			dir, state := workDir(t), stateDir(t)
			fsImage(t, dir, "fs.img", "mkfs.ext4", 32<<20)
			sandboxMkdir(t, dir, "mnt")
			pid := strconv.Itoa(os.Getpid())
			script := `d=$(losetup -f --show fs.img) || exit 1
mount $d mnt || exit 1
m=fspick-flood; sh -c 'while [ ! -e go1 ]; do sleep 0.05; done' "$m-1-` + pid + `"
fspickro mnt many 5000
sh -c 'while [ ! -e go2 ]; do sleep 0.05; done' "$m-2-` + pid + `"
umount mnt; echo "umount $?"
losetup -d $d; echo "left $(losetup -a | grep -c fs.img)"`
			out := sandboxAsync(dir, state, p.flags, script)
			sup := supervisorOf(t, pidWithArg(t, "fspick-flood-1-"+pid, time.Minute))
			before := fdCount(t, sup)
			touch(t, filepath.Join(dir, "go1"))
			pidWithArg(t, "fspick-flood-2-"+pid, time.Minute)
			after := fdCount(t, sup)
			touch(t, filepath.Join(dir, "go2"))
			o := <-out
			check(t, o.err)
			if o.r.Code != 0 || !strings.Contains(o.r.Stdout, "picked 5000\numount 0\nleft 0\n") {
				t.Fatalf("set-up: 5000 contexts should be picked and the mount go:\n%s", o.r)
			}
			t.Logf("supervisor descriptors: %d before, %d after 5000 contexts", before, after)
			if after-before > 2*16+8 {
				t.Errorf("the supervisor holds %d more descriptors after 5000 contexts the caller closed", after-before)
			}
		})
	}
}

// TestAttackKernelMountJournalDev: an ext4 image whose superblock names
// an external journal by device number (s_journal_dev, here a loop minor
// that does not exist on the host) and a kernel mount of it
// (--allow-kernel-mount ext4). The superblock is created by host root
// (nsexec kcreate), and ext4 opens the journal device by that number:
// before the fix the kernel created the host device loopN (block device
// autoloading: "couldn't read superblock of external journal"), outside
// the instance, its limits and its journal, left after the sandbox. Now
// the mount proxy refuses an external journal before the create (EINVAL,
// on any host), and kcreate's devices cgroup stands behind that check
// (TestKcreateConfinesJournalDev): the mount fails and no device appears.
// Without loopvisor the device of the image is not there.
func TestAttackKernelMountJournalDev(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	dir, state := workDir(t), stateDir(t)
	img, idx := journalDevImage(t, dir)
	check(t, os.Chown(img, SandboxUID, SandboxUID))
	sandboxMkdir(t, dir, "mnt")
	script := `d=$(losetup -f --show fs.img) || exit 1
mount $d mnt 2>/dev/null; echo "mount $?"
umount mnt 2>/dev/null
losetup -d $d; echo "detach $?"`
	out := sandboxOK(t, dir, state, []string{"--allow-kernel-mount", "ext4"}, script)
	if !strings.Contains(out, "detach 0\n") || strings.Contains(out, "mount 0\n") {
		t.Errorf("the mount of an image with a missing external journal should fail and the device go:\n%s", out)
	}
	if !loopIndexAbsent(idx) {
		t.Errorf("a kernel mount of the sandbox's image created host device loop%d (its external journal's number)", idx)
	}
	bareFails(t, dir, state, script)
}

// needCgroupV1Devices skips where kcreate's devices cgroup is not made.
func needCgroupV1Devices(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/devices"); err != nil {
		t.Skip("no cgroup v1 devices hierarchy: the create is not confined on this host (README)")
	}
}

// journalDevAttached attaches journalDevImage's image to a host loop
// device (detached at cleanup) and returns its node, its stat and the
// loop minor the image names as its external journal.
func journalDevAttached(t *testing.T, dir string) (string, unix.Stat_t, int) {
	img, idx := journalDevImage(t, dir)
	r := run(t, dir, "losetup", "-f", "--show", img)
	if r.Code != 0 {
		t.Fatal(r)
	}
	dev := strings.TrimSpace(r.Stdout)
	t.Cleanup(func() { run(t, dir, "losetup", "-d", dev) })
	var st unix.Stat_t
	check(t, unix.Stat(dev, &st))
	return dev, st, idx
}

// journalDevImage makes dir/fs.img, an ext4 image whose superblock names
// an external journal by device number: a loop minor idx that does not
// exist on the host (removed again at cleanup should anything create it).
func journalDevImage(t *testing.T, dir string) (string, int) {
	stray := removeStrays(t)
	idx := freeIndexRange(t, 1)
	stray(strconv.Itoa(idx))
	img := filepath.Join(dir, "fs.img")
	fsImage(t, dir, "fs.img", "mkfs.ext4", 32<<20)
	enc := idx&0xff | 7<<8 | (idx&^0xff)<<12 // new_encode_dev(7:idx)
	for _, req := range []string{"ssv journal_inum 0", fmt.Sprintf("ssv journal_dev %d", enc)} {
		if r := run(t, "/", "debugfs", "-w", "-R", req, img); r.Code != 0 {
			t.Fatalf("debugfs %s: %s", req, r)
		}
	}
	return img, idx
}

// TestKcreateConfinesJournalDev: the confinement of nsexec's kcreate
// holds by itself, without the mount proxy's superblock check in front
// of it (which a sandbox could race by rewriting its image between the
// check and the create), both as the supervisor sets it up first (a
// cgroup v2 device program the op starts in) and as it falls back (a v1
// devices cgroup). The op is run directly, as the supervisor runs it
// (nsexec.CreateSuperblockWith), on an ext4 context whose image names a
// free loop minor as its external journal: the create fails with the
// device cgroup's EPERM and the minor is not created, where host root's
// own create makes the kernel create it.
func TestKcreateConfinesJournalDev(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	dir := workDir(t)
	dev, st, idx := journalDevAttached(t, dir)
	context := func(t *testing.T) *os.File {
		fd, err := unix.Fsopen("ext4", unix.FSOPEN_CLOEXEC)
		check(t, err)
		ctx := os.NewFile(uintptr(fd), "fscontext")
		t.Cleanup(func() { _ = ctx.Close() })
		check(t, unix.FsconfigSetString(fd, "source", dev))
		return ctx
	}
	for _, c := range []struct {
		name string
		how  nsexec.Confinement
	}{{"bpf", nsexec.ConfineBPF}, {"v1", nsexec.ConfineV1}} {
		t.Run(c.name, func(t *testing.T) {
			switch c.how {
			case nsexec.ConfineV1:
				needCgroupV1Devices(t)
			case nsexec.ConfineBPF:
				if !hasCgroup2() {
					t.Skip("no cgroup v2 hierarchy: kcreate falls back to the v1 devices cgroup")
				}
			}
			err := nsexec.CreateSuperblockWith(context(t), dev, st.Rdev, c.how)
			t.Logf("kcreate: %v", err)
			if !loopIndexAbsent(idx) {
				t.Errorf("kcreate let the image's external journal create host loop%d (%v)", idx, err)
			}
			// The create must be what failed, with the device cgroup's
			// EPERM, not the op's set-up.
			var ne *nsexec.Error
			if !errors.As(err, &ne) || ne.Step != "create" || ne.Errno != unix.EPERM {
				t.Errorf("kcreate should fail at the create with EPERM (the device cgroup), got %v", err)
			}
		})
	}
	// Control: host root's own create opens the journal's device number
	// and the kernel creates the minor (removed by removeStrays).
	if err := unix.FsconfigCreate(int(context(t).Fd())); loopIndexAbsent(idx) {
		t.Errorf("control: host root's create (%v) did not create loop%d: the test image does not name it", err, idx)
	}
	// Nothing left of the op's cgroups.
	if left, _ := filepath.Glob("/sys/fs/cgroup/*/" + devcgroup.ConfinedPrefix + "*"); len(left) > 0 {
		t.Errorf("kcreate left cgroups: %v", left)
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/devices/loopvisor-kcreate-*"); len(left) > 0 {
		t.Errorf("kcreate left cgroups: %v", left)
	}
}

// TestKcreateFullCgroupNotUnconfined: a transient failure to make the
// create's cgroup v2 (a limit reached: cgroup.max.descendants, which a
// sandbox reaches by stalling creates, or pids.max for the clone3, which
// one that shares the supervisor's cgroup reaches by forking) must not
// make the create run unconfined. The fallback is the v1 devices cgroup,
// which a cgroup v2-only host does not have; the test makes one by
// running the create on a thread whose private mount namespace has no v1
// devices hierarchy, with the process in a cgroup v2 that may have no
// children. With a v1 devices hierarchy the create is confined there;
// without one CreateSuperblock must fail (EAGAIN) and the image's
// external journal must not make the kernel create its loop minor; the
// control, the v1 fallback on its own in that namespace, shows it would.
func TestKcreateFullCgroupNotUnconfined(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	root, own := cgroup2Own(t)
	dir := workDir(t)
	dev, st, idx := journalDevAttached(t, dir)
	context := func() (*os.File, error) {
		fd, err := unix.Fsopen("ext4", unix.FSOPEN_CLOEXEC)
		if err != nil {
			return nil, err
		}
		ctx := os.NewFile(uintptr(fd), "fscontext")
		if err := unix.FsconfigSetString(fd, "source", dev); err != nil {
			_ = ctx.Close()
			return nil, err
		}
		return ctx, nil
	}

	// A cgroup v2 that may have no children, with this process in it
	// until the end.
	full := filepath.Join(root, own, fmt.Sprintf("loopvisor-test-full-%d", os.Getpid()))
	check(t, os.Mkdir(full, 0o700))
	t.Cleanup(func() {
		// The test's children exited in it a moment ago: the kernel
		// releases them from the cgroup shortly after they are reaped
		// (EBUSY until then).
		var err error
		for i := 0; i < 100; i++ {
			if err = os.Remove(full); !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("remove %s: %v", full, err)
		}
	})
	check(t, os.WriteFile(filepath.Join(full, "cgroup.max.descendants"), []byte("0"), 0))
	back := filepath.Join(root, own, "cgroup.procs")
	check(t, os.WriteFile(filepath.Join(full, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0))
	t.Cleanup(func() {
		if err := os.WriteFile(back, []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			t.Errorf("move the test back to %s: %v", back, err)
		}
	})

	// Where there is a v1 devices hierarchy the create falls back to it
	// and is confined there (EPERM at the create, as in
	// TestKcreateConfinesJournalDev).
	if _, err := os.Stat("/sys/fs/cgroup/devices"); err == nil {
		ctx, err := context()
		check(t, err)
		err = nsexec.CreateSuperblock(ctx, dev, st.Rdev)
		_ = ctx.Close()
		var ne *nsexec.Error
		if !errors.As(err, &ne) || ne.Step != "create" || ne.Errno != unix.EPERM || !loopIndexAbsent(idx) {
			t.Errorf("with a v1 devices hierarchy and the cgroup v2 full: %v (loop%d made: %v), want EPERM at the create from the v1 devices cgroup", err, idx, !loopIndexAbsent(idx))
		}
	}

	type result struct {
		prod, control error
		prodMinor     bool // the production create made loop idx
		setup         error
	}
	var out result
	onSideThread(func() {
		if out.setup = unix.Unshare(unix.CLONE_NEWNS); out.setup != nil {
			return
		}
		if out.setup = unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); out.setup != nil {
			return
		}
		// What kcreate finds of a v1 devices hierarchy is then not
		// writable, as where there is none.
		if _, err := os.Stat("/sys/fs/cgroup/devices"); err == nil {
			if out.setup = unix.Mount("none", "/sys/fs/cgroup/devices", "tmpfs", unix.MS_RDONLY, "size=4k"); out.setup != nil {
				return
			}
		}
		ctx, err := context()
		if out.setup = err; err != nil {
			return
		}
		out.prod = nsexec.CreateSuperblock(ctx, dev, st.Rdev)
		_ = ctx.Close()
		out.prodMinor = !loopIndexAbsent(idx)
		if ctx, out.setup = context(); out.setup != nil {
			return
		}
		out.control = nsexec.CreateSuperblockWith(ctx, dev, st.Rdev, nsexec.ConfineV1)
		_ = ctx.Close()
	})
	if out.setup != nil {
		t.Fatalf("set-up: %v", out.setup)
	}
	t.Logf("CreateSuperblock with the cgroup full: %v", out.prod)
	if out.prodMinor {
		t.Errorf("the create ran unconfined: the image's external journal created host loop%d (%v)", idx, out.prod)
	}
	if !errors.Is(out.prod, unix.EAGAIN) {
		t.Errorf("CreateSuperblock with the cgroup full: %v, want EAGAIN", out.prod)
	}
	// Control: here the v1 fallback alone confines nothing.
	t.Logf("control (v1 fallback, no v1 hierarchy): %v", out.control)
	if loopIndexAbsent(idx) {
		t.Errorf("control: the create in a namespace without a v1 devices hierarchy (%v) did not create loop%d: the test does not show an unconfined create", out.control, idx)
	}
}

// onSideThread runs fn on a locked thread other than the process's main
// one (whose namespaces /proc/self shows), which ends with fn: fn may
// change that thread's namespaces.
func onSideThread(fn func()) {
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != os.Getpid() {
			defer close(done)
			fn()
			return // still locked: the thread ends here
		}
		// The main thread: hold it, so that another goroutine's thread
		// cannot be it.
		go func() {
			runtime.LockOSThread()
			defer close(done)
			fn()
		}()
		<-done
		runtime.UnlockOSThread()
	}()
	<-done
}

// cgroup2Own returns the mount point of the cgroup v2 hierarchy and this
// process's cgroup in it, or skips t.
func cgroup2Own(t *testing.T) (root, own string) {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	check(t, err)
	for _, l := range strings.Split(string(mi), "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		f := strings.Fields(pre)
		if ok && strings.HasPrefix(post, "cgroup2 ") && len(f) >= 5 && f[3] == "/" {
			root = f[4]
			break
		}
	}
	cg, err := os.ReadFile("/proc/self/cgroup")
	check(t, err)
	for _, l := range strings.Split(string(cg), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			own = p
		}
	}
	if root == "" || own == "" {
		t.Skip("no cgroup v2 hierarchy")
	}
	return root, own
}

// hasCgroup2 reports whether a cgroup v2 hierarchy is mounted.
func hasCgroup2() bool {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	return err == nil && strings.Contains(string(mi), " - cgroup2 ")
}
