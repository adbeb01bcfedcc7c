package lxcproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/notify"
)

// packet builds a request as LXC's seccomp_notify_handler does.
func packet(id uint64, pid uint32, cookie string, notifSize, respSize uint16) []byte {
	le := binary.LittleEndian
	h := make([]byte, HeaderSize)
	le.PutUint32(h[8:], 777)  // monitor
	le.PutUint32(h[12:], 900) // init
	le.PutUint16(h[16:], notifSize)
	le.PutUint16(h[18:], respSize)
	le.PutUint16(h[20:], notify.DataSize)
	le.PutUint64(h[24:], uint64(len(cookie)))
	n := make([]byte, notifSize)
	le.PutUint64(n[0:], id)
	le.PutUint32(n[8:], pid)
	le.PutUint32(n[16:], 16) // ioctl
	le.PutUint32(n[20:], notify.AuditArchX86_64)
	le.PutUint64(n[40:], 0x4c82) // args[1]
	out := append(h, n...)
	out = append(out, make([]byte, respSize)...)
	return append(out, cookie...)
}

func TestParseAndReply(t *testing.T) {
	b := packet(99, 1234, "max-loop=2", notify.NotifSize, notify.NotifRespSize)
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.InitPid != 900 || m.MonitorPid != 777 || m.Cookie != "max-loop=2" || m.Request.ID != 99 ||
		m.Request.Pid != 1234 || m.Request.Args[1] != 0x4c82 || m.Request.Nr != 16 {
		t.Fatalf("decoded %+v", m)
	}
	r := m.Reply(notify.Errno(unix.ENOSPC))
	base := HeaderSize + notify.NotifSize + notify.NotifRespSize
	if len(r) != base {
		t.Fatalf("reply of %d bytes, LXC wants exactly %d", len(r), base)
	}
	if !bytes.Equal(r[:8], make([]byte, 8)) {
		t.Error("reserved field not zero")
	}
	if !bytes.Equal(r[HeaderSize:HeaderSize+notify.NotifSize], b[HeaderSize:HeaderSize+notify.NotifSize]) {
		t.Error("notif not echoed")
	}
	resp := r[HeaderSize+notify.NotifSize:]
	le := binary.LittleEndian
	if le.Uint64(resp[0:]) != 99 || int32(le.Uint32(resp[16:])) != -int32(unix.ENOSPC) || le.Uint32(resp[20:]) != 0 {
		t.Errorf("resp % x", resp)
	}
	// Larger structs of a newer kernel: echoed and padded to their sizes.
	m, err = Parse(packet(5, 1, "", notify.NotifSize+8, notify.NotifRespSize+8))
	if err != nil {
		t.Fatal(err)
	}
	if r := m.Reply(notify.Continue); len(r) != HeaderSize+notify.NotifSize+8+notify.NotifRespSize+8 {
		t.Errorf("reply of %d bytes for larger structs", len(r))
	}
}

func TestParseRefuses(t *testing.T) {
	good := packet(1, 10, "c", notify.NotifSize, notify.NotifRespSize)
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	le := binary.LittleEndian
	for name, b := range map[string][]byte{
		"short":           good[:HeaderSize-1],
		"reserved":        mut(func(b []byte) []byte { b[0] = 1; return b }),
		"cookie too long": mut(func(b []byte) []byte { le.PutUint64(b[24:], 2); return b }),
		"cookie huge":     mut(func(b []byte) []byte { le.PutUint64(b[24:], 1<<63); return b }),
		"trailing":        append(append([]byte(nil), good...), 0),
		"small notif":     mut(func(b []byte) []byte { le.PutUint16(b[16:], notify.NotifSize-1); return b }),
		"small resp":      mut(func(b []byte) []byte { le.PutUint16(b[18:], 1); return b }),
		"huge notif":      mut(func(b []byte) []byte { le.PutUint16(b[16:], 0xffff); return b }),
		"init 0":          mut(func(b []byte) []byte { le.PutUint32(b[12:], 0); return b }),
		"pid 0":           mut(func(b []byte) []byte { le.PutUint32(b[HeaderSize+8:], 0); return b }),
	} {
		if _, err := Parse(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(packet(1, 10, "max-loop=1", notify.NotifSize, notify.NotifRespSize))
	f.Add(packet(1, 10, "", notify.NotifSize+8, notify.NotifRespSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		if len(m.Reply(notify.Continue)) != len(b)-len(m.Cookie) {
			t.Fatalf("reply length %d for a packet of %d with a cookie of %d", len(m.Reply(notify.Continue)), len(b), len(m.Cookie))
		}
	})
}

// Read over a real SOCK_SEQPACKET pair: the three fds are taken, a packet
// with fewer fds is refused and its fds closed, a hang-up is recognised.
func TestReadOverSocket(t *testing.T) {
	dir := t.TempDir()
	ln, err := Listen(filepath.Join(dir, "lxc.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	if st, err := os.Stat(filepath.Join(dir, "lxc.sock")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v %v", st.Mode(), err)
	}
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: filepath.Join(dir, "lxc.sock"), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	fd := int(f.Fd())
	send := func(fds ...int) {
		t.Helper()
		if _, _, err := c.WriteMsgUnix(packet(7, 42, "ck", notify.NotifSize, notify.NotifRespSize), unix.UnixRights(fds...), nil); err != nil {
			t.Fatal(err)
		}
	}
	send(fd, fd, fd)
	m, err := Read(s)
	if err != nil {
		t.Fatal(err)
	}
	if m.Proc == nil || m.Mem == nil || m.Listener == nil || m.Request.Mem != m.Mem || m.Cookie != "ck" {
		t.Fatalf("message %+v", m)
	}
	l := m.TakeListener()
	if l < 0 || m.Listener != nil {
		t.Fatal("TakeListener")
	}
	_ = unix.Close(l)
	m.Close()
	send(fd, fd)
	if _, err := Read(s); !errors.Is(err, ErrFds) {
		t.Errorf("two fds: %v", err)
	}
	_ = c.Close()
	if _, err := Read(s); !IsHangup(err) {
		t.Errorf("hang-up: %v", err)
	}
}
