package linux

import "golang.org/x/sys/unix"

// kcmpFile is KCMP_FILE (include/uapi/linux/kcmp.h).
const kcmpFile = 0

// SameFile reports whether descriptor fd1 of task pid1 and descriptor fd2
// of task pid2 are the same open file (kcmp(KCMP_FILE) answers 0): one
// file description, as dup and SCM_RIGHTS share it, not merely the same
// inode. Pids are thread ids in the caller's pid namespace; kcmp looks
// them up when it runs, so a result about a pid the caller does not hold
// alive says nothing about the task it had in mind (see notify's fd cache
// for how the notification ID check closes that gap).
//
// kcmp never sleeps on anything but its own locks: it is issued with
// unix.RawSyscall. It needs CONFIG_KCMP (ENOSYS otherwise) and ptrace
// read access to both tasks.
func SameFile(pid1, pid2, fd1, fd2 int) (bool, error) {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
		switch e {
		case unix.EINTR:
			continue
		case 0:
			return r == 0, nil
		}
		return false, e
	}
}
