package mountproxy

import (
	"os"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// The block size of a FUSE helper's device.
//
// The kernel's ext2/3/4 driver sets its device's block size to the file
// system's when it mounts (sb_set_blocksize): BLKBSZGET then answers the
// file system's block size, and the device's page cache is kept in blocks
// of that size. A FUSE helper opens the device like any program and gets
// the size the kernel chose at the first open: the largest power of two up
// to a page that divides the device's size, 4096 for nearly every device.
// fuse2fs writes one file-system block per pwrite; mke2fs gives file
// systems under 512 MiB 1024-byte blocks, and a 1024-byte write into a
// page of the device that is not in the cache makes the kernel read the
// rest of the page from the loop device first, one synchronous read for
// every fourth block written. So before the helper starts, the supervisor
// sets the device's block size to the file system's, as the kernel's mount
// would, and holds the device open until the helper has it open (the
// kernel goes back to its own choice at the first open after the last
// close). Filling the image build's root file system (make bench) took
// 2 to 3 times longer without it.

// blockSizeWait bounds how long a mount waits for BLKBSZSET, which writes
// the device's dirty pages back first, as the kernel's mount does: a
// backing file the container serves through FUSE may never answer. The
// mount goes on without the new size then; the ioctl finishes (or not)
// in the background. As long as the superblock read's bound.
const blockSizeWait = CheckTimeout

// matchBlockSize sets the block size of the device at node to size unless
// it has it already, and returns a function that gives up the device once
// the helper holds it. Best effort: a size the kernel refuses (larger than
// a page, smaller than the device's logical blocks, the device held
// exclusively) leaves the device as it was, which only costs speed.
func matchBlockSize(node string, size int, log *logrus.Entry) (release func()) {
	if size < 512 || size > os.Getpagesize() || size&(size-1) != 0 {
		return func() {}
	}
	f, err := os.Open(node)
	if err != nil {
		return func() {}
	}
	done := make(chan struct{})
	released := make(chan struct{})
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		defer func() { _ = f.Close() }()
		cur, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKBSZGET)
		if err == nil && cur != size {
			err = unix.IoctlSetPointerInt(int(f.Fd()), unix.BLKBSZSET, size)
			log.WithError(err).WithFields(logrus.Fields{"from": cur, "to": size}).Debug("device block size set to the file system's, as the kernel's mount sets it")
		}
		close(done)
		<-released
	}()
	t := time.NewTimer(blockSizeWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		log.WithField("node", node).Info("setting the device's block size did not return in time (its backing file stalls); mounting without it")
	}
	// A release after the ioctl returned waits for the close: the device
	// is then no longer held when the mount's reply reaches the container
	// (a LOOP_CTL_REMOVE right after the umount must not find it open).
	// One still stalled closes it when the ioctl returns.
	return func() {
		close(released)
		select {
		case <-done:
			<-closed
		default:
		}
	}
}
