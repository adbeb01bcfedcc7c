// Package lxcproto is the wire format of LXC's seccomp notify proxy
// (lxc.seccomp.notify.proxy = unix:PATH, LXC 4 and later), as LXC's
// monitor speaks it: one SOCK_SEQPACKET connection per container, one
// packet per notification, one packet back.
//
// A request packet is struct seccomp_notify_proxy_msg (HeaderSize bytes:
// u64 reserved, i32 monitor pid, i32 init pid, struct seccomp_notif_sizes
// {u16 notif, resp, data}, padding, u64 cookie length), then the
// struct seccomp_notif the monitor received (sizes.notif bytes), a zeroed
// struct seccomp_notif_resp (sizes.resp bytes) and the cookie
// (lxc.seccomp.notify.cookie, no NUL). Three fds come with it as
// SCM_RIGHTS: the caller's /proc/PID directory, its /proc/PID/mem (read
// and write) and the seccomp listener itself. The reply is header, notif
// and resp (no cookie), exactly as long as the request without its
// cookie, with resp.id equal to the notification's id and the header's
// reserved field zero; LXC then answers the kernel with resp as it is
// (NOTIF_SEND). Any other reply makes LXC answer ENOSYS.
//
// Design: Parse is a pure function of the packet's bytes (fuzzed); Read
// adds the socket: it takes every fd that came, refuses a packet that was
// truncated or carries other than three fds. Nothing in a packet is
// trusted beyond its syntax: the agent checks the notification against
// the listener (NOTIF_ID_VALID) and the init on kernel objects.
//
// When not to use this package: for OCI runtimes' listenerPath protocol
// (ociproto), which passes the listener once per process.
package lxcproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/internal/unixsock"
	"github.com/loopvisor/loopvisor/notify"
)

// HeaderSize is sizeof(struct seccomp_notify_proxy_msg) on 64-bit Linux.
const HeaderSize = 32

// MaxCookie bounds the cookie; LXC's are a config value.
const MaxCookie = 4096

// maxStruct bounds the sizes a header may claim for the kernel structs.
const maxStruct = 1024

// Sizes is struct seccomp_notif_sizes as the monitor's kernel reports it.
type Sizes struct{ Notif, Resp, Data uint16 }

// Message is one request packet, decoded.
type Message struct {
	MonitorPid, InitPid int // in the monitor's pid namespace
	Sizes               Sizes
	Request             notify.Request
	Notif               []byte // the seccomp_notif as sent, echoed in the reply
	Cookie              string
	// Proc, Mem and Listener are the fds that came with the packet (Read
	// only); the Message owns them until Close.
	Proc, Mem, Listener *os.File
}

// Parse decodes a request packet.
func Parse(b []byte) (*Message, error) {
	if len(b) < HeaderSize {
		return nil, fmt.Errorf("lxcproto: packet of %d bytes, shorter than the header", len(b))
	}
	le := binary.LittleEndian
	if r := le.Uint64(b[0:]); r != 0 {
		return nil, fmt.Errorf("lxcproto: reserved field is %#x", r)
	}
	m := &Message{
		MonitorPid: int(int32(le.Uint32(b[8:]))),
		InitPid:    int(int32(le.Uint32(b[12:]))),
		Sizes:      Sizes{le.Uint16(b[16:]), le.Uint16(b[18:]), le.Uint16(b[20:])},
	}
	cookieLen := le.Uint64(b[24:])
	s := m.Sizes
	if s.Notif < notify.NotifSize || s.Resp < notify.NotifRespSize || s.Data < notify.DataSize ||
		s.Notif > maxStruct || s.Resp > maxStruct || int(s.Data) > int(s.Notif)-16 {
		return nil, fmt.Errorf("lxcproto: implausible seccomp_notif_sizes %+v", s)
	}
	if m.InitPid <= 0 {
		return nil, fmt.Errorf("lxcproto: init pid %d", m.InitPid)
	}
	if cookieLen > MaxCookie {
		return nil, fmt.Errorf("lxcproto: cookie of %d bytes", cookieLen)
	}
	base := HeaderSize + int(s.Notif) + int(s.Resp)
	if len(b) != base+int(cookieLen) {
		return nil, fmt.Errorf("lxcproto: packet of %d bytes, header says %d", len(b), base+int(cookieLen))
	}
	m.Notif = append([]byte(nil), b[HeaderSize:HeaderSize+int(s.Notif)]...)
	req, err := notify.UnmarshalNotif(m.Notif)
	if err != nil {
		return nil, err
	}
	m.Request = req
	m.Cookie = string(b[base:])
	return m, nil
}

// Reply is the packet that answers m with r: header (reserved zero), the
// notif as received, and the seccomp_notif_resp for m's id.
func (m *Message) Reply(r notify.Reply) []byte {
	out := make([]byte, HeaderSize, HeaderSize+len(m.Notif)+int(m.Sizes.Resp))
	le := binary.LittleEndian
	le.PutUint32(out[8:], uint32(int32(m.MonitorPid)))
	le.PutUint32(out[12:], uint32(int32(m.InitPid)))
	le.PutUint16(out[16:], m.Sizes.Notif)
	le.PutUint16(out[18:], m.Sizes.Resp)
	le.PutUint16(out[20:], m.Sizes.Data)
	out = append(out, m.Notif...)
	return append(out, notify.MarshalResp(m.Request.ID, r, int(m.Sizes.Resp))...)
}

// ErrFds means a packet came without the three fds LXC sends.
var ErrFds = errors.New("lxcproto: the packet did not carry /proc/PID, /proc/PID/mem and the listener")

// Read reads one request packet from conn (blocking until the monitor
// sends one). io.EOF: the monitor hung up. A packet that does not parse
// is an error with a nil Message; its fds are closed.
func Read(conn *net.UnixConn) (*Message, error) {
	buf := make([]byte, HeaderSize+2*maxStruct+MaxCookie+1)
	oob := make([]byte, unix.CmsgSpace(4*8))
	n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
	fds := unixsock.Rights(oob[:oobn])
	closeAll := func() {
		for _, fd := range fds {
			_ = unix.Close(fd) // fds of a refused packet: nothing else holds them here
		}
	}
	if err != nil {
		closeAll()
		return nil, err
	}
	if n == 0 && oobn == 0 {
		return nil, errEOF
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		closeAll()
		return nil, fmt.Errorf("lxcproto: truncated packet (flags %#x)", flags)
	}
	m, err := Parse(buf[:n])
	if err != nil {
		closeAll()
		return nil, err
	}
	if len(fds) != 3 {
		closeAll()
		return nil, ErrFds
	}
	m.Proc = os.NewFile(uintptr(fds[0]), "proc")
	m.Mem = os.NewFile(uintptr(fds[1]), "mem")
	m.Listener = os.NewFile(uintptr(fds[2]), "seccomp-listener")
	m.Request.Proc, m.Request.Mem = m.Proc, m.Mem
	return m, nil
}

var errEOF = fmt.Errorf("lxcproto: the monitor hung up: %w", os.ErrClosed)

// IsHangup reports whether err from Read means the peer closed the connection.
func IsHangup(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF)
}

// TakeListener hands the listener fd over to the caller (-1 if none).
func (m *Message) TakeListener() int {
	if m.Listener == nil {
		return -1
	}
	fd, err := unix.Dup(int(m.Listener.Fd()))
	_ = m.Listener.Close() // the dup (or nothing) is what matters now
	m.Listener = nil
	if err != nil {
		return -1
	}
	unix.CloseOnExec(fd)
	return fd
}

// Close closes the fds the packet brought.
func (m *Message) Close() {
	for _, f := range []*os.File{m.Proc, m.Mem, m.Listener} {
		if f != nil {
			_ = f.Close() // our copies; the monitor keeps its own
		}
	}
	m.Proc, m.Mem, m.Listener = nil, nil, nil
	m.Request.Proc, m.Request.Mem = nil, nil
}

// Listen creates the proxy socket (SOCK_SEQPACKET, mode 0600: only root's
// monitors may connect; a stale socket is replaced).
func Listen(path string) (*net.UnixListener, error) { return unixsock.Listen("unixpacket", path) }
