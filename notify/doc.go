// Package notify owns the seccomp user-notification side of loopvisor: the
// filter a sandbox loads, the listener fd the supervisor drives, and the
// typed view of one trapped system call.
//
// Design:
//
//   - Filter builds the BPF program with libseccomp-golang. It traps only the
//     ioctl commands loopvisor serves, compared on the low 32 bits of the cmd
//     argument (SCMP_CMP_MASKED_EQ with mask 0xffffffff): the kernel truncates
//     cmd to 32 bits, so a caller setting high bits cannot walk around a
//     64-bit compare. Everything else runs at kernel speed (SCMP_ACT_ALLOW).
//   - Listener wraps the listener fd. It never pins an OS thread: the fd is
//     registered with the Go runtime's netpoller and the raw
//     SECCOMP_IOCTL_NOTIF_* ioctls are issued only once poll(2) says a
//     notification is pending. SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP is set
//     where the kernel has it (6.6+). EPOLLHUP (no task uses the filter any
//     more) ends Serve.
//   - Target is the trapped task as seen from the supervisor: its pidfd, its
//     fds (pidfd_getfd) and its memory (process_vm_readv/writev). Every read
//     of container memory is followed by a check that the notification ID is
//     still valid, and handlers act only on their own copies.
//
// Replies are always an errno or a return value. CONTINUE is used only for
// "not mine": calls whose effect loopvisor does not decide (for example a
// LOOP_SET_STATUS64 command number sent to a pipe), so the kernel decides with
// the caller's own credentials.
//
// When not to use this package: for syscalls that must be decided on
// pointers the kernel re-reads after the reply (paths for open, say).
package notify
