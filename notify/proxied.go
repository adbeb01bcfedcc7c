package notify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrObserver is returned by Next and Respond of a Listener made with
// Observe: another process receives and answers its notifications.
var ErrObserver = errors.New("notify: this listener is another process's; it only checks notification IDs")

// Observe wraps fd, a seccomp listener that another process drives (LXC's
// monitor receives and answers the notifications and forwards each one to
// a proxy). The Listener takes ownership of fd but never changes it: no
// O_NONBLOCK, no SET_FLAGS, no RECV or SEND. Valid and Target work, so a
// forwarded notification is checked against the kernel as a received one
// is; Next and Respond return ErrObserver.
func Observe(fd int) (*Listener, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd) // we own fd and fail
		return nil, os.NewSyscallError("fstat", err)
	}
	l := &Listener{fd: fd, pidfds: map[int]int{}, observer: true}
	l.f = os.NewFile(uintptr(fd), "seccomp-listener(observed)")
	rc, err := l.f.SyscallConn()
	if err != nil {
		_ = l.f.Close() // the SyscallConn error is the one to report
		return nil, err
	}
	l.rc = rc
	return l, nil
}

// Sizes of struct seccomp_notif, seccomp_notif_resp and seccomp_data as
// this build lays them out (the kernel's SECCOMP_GET_NOTIF_SIZES may report
// larger ones from a newer kernel; the leading fields are these).
const (
	NotifSize     = 80
	NotifRespSize = 24
	DataSize      = 64
)

// KernelSizes asks the running kernel for its seccomp_notif_sizes
// (seccomp(SECCOMP_GET_NOTIF_SIZES)): notif, resp, data.
func KernelSizes() (notif, resp, data uint16, err error) {
	var s [3]uint16
	if err := getNotifSizes(&s); err != nil {
		return 0, 0, 0, os.NewSyscallError("seccomp(SECCOMP_GET_NOTIF_SIZES)", err)
	}
	return s[0], s[1], s[2], nil
}

// UnmarshalNotif decodes a struct seccomp_notif another process received
// (at least NotifSize bytes; fields a newer kernel appends are ignored).
func UnmarshalNotif(b []byte) (Request, error) {
	if len(b) < NotifSize {
		return Request{}, fmt.Errorf("notify: seccomp_notif of %d bytes, want at least %d", len(b), NotifSize)
	}
	le := binary.LittleEndian
	if nativeBigEndian {
		return Request{}, errors.New("notify: big-endian hosts are not supported")
	}
	r := Request{
		ID:   le.Uint64(b[0:]),
		Pid:  int(le.Uint32(b[8:])),
		Nr:   int32(le.Uint32(b[16:])),
		Arch: le.Uint32(b[20:]),
	}
	// b[12:16] is flags (unused by the kernel), b[24:32] the instruction pointer.
	for i := range r.Args {
		r.Args[i] = le.Uint64(b[32+8*i:])
	}
	if r.Pid <= 0 || r.Pid > 1<<22 {
		return Request{}, fmt.Errorf("notify: seccomp_notif names pid %d", r.Pid)
	}
	return r, nil
}

// MarshalResp encodes the struct seccomp_notif_resp that answers
// notification id with r, into a buffer of size bytes (>= NotifRespSize;
// the rest stays zero), as Respond would send it.
func MarshalResp(id uint64, r Reply, size int) []byte {
	if size < NotifRespSize {
		size = NotifRespSize
	}
	b := make([]byte, size)
	resp := respFor(id, r)
	le := binary.LittleEndian
	le.PutUint64(b[0:], resp.ID)
	le.PutUint64(b[8:], uint64(resp.Val))
	le.PutUint32(b[16:], uint32(resp.Error))
	le.PutUint32(b[20:], resp.Flags)
	return b
}
