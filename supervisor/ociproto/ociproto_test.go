package ociproto

import (
	"net"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// pair returns two connected unix stream sockets.
func pair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "sock")
		defer func() { _ = f.Close() }()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn) //nolint:forcetypeassert // FileConn of a unix socket
	}
	a, b := conn(fds[0]), conn(fds[1])
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}

func TestReadRuntimeMessage(t *testing.T) {
	cases := []struct {
		name    string
		chunks  []string
		wantID  string
		wantErr bool
		wantFD  bool
	}{
		{"one chunk", []string{`{"ociVersion":"1.0.2","fds":["seccompFd"],"pid":7,"state":{"id":"c1","pid":7}}`}, "c1", false, true},
		{"two chunks", []string{`{"fds":["seccompFd"],"pid":7,"st`, `ate":{"id":"c2","pid":7}}`}, "c2", false, true},
		{"no seccompFd", []string{`{"fds":["other"],"state":{"id":"c3"}}`}, "c3", false, false},
		{"truncated", []string{`{"fds":["seccompFd"`}, "", true, false},
		{"too long", []string{`{"x":"` + strings.Repeat("a", MaxMessage+10)}, "", true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, w := pair(t)
			devnull, err := os.Open(os.DevNull)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = devnull.Close() }()
			go func() {
				_, _, _ = w.WriteMsgUnix([]byte(c.chunks[0]), unix.UnixRights(int(devnull.Fd())), nil)
				for _, ch := range c.chunks[1:] {
					_, _ = w.Write([]byte(ch))
				}
				_ = w.CloseWrite()
			}()
			m, err := Read(r)
			if err == nil {
				defer m.Close()
			} else {
				m.Close()
			}
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, want error %v", err, c.wantErr)
			}
			if c.wantErr {
				return
			}
			if m.State.State.ID != c.wantID {
				t.Errorf("id %q, want %q", m.State.State.ID, c.wantID)
			}
			fd := m.TakeFD("seccompFd")
			if (fd >= 0) != c.wantFD {
				t.Errorf("seccompFd %d, want one: %v", fd, c.wantFD)
			}
			if fd >= 0 {
				_ = unix.Close(fd)
				if m.TakeFD("seccompFd") >= 0 {
					t.Errorf("a taken fd was handed out twice")
				}
			}
		})
	}
}

func TestReadStatusRequest(t *testing.T) {
	for _, tc := range []struct {
		req          string
		status, info bool
	}{{StatusRequest, true, false}, {InfoRequest, false, true}} {
		r, w := pair(t)
		go func() { _, _ = w.Write([]byte(tc.req + "\n")) }()
		m, err := Read(r)
		if err != nil {
			m.Close()
			t.Fatal(err)
		}
		if m.Status != tc.status || m.Info != tc.info || m.State != nil {
			t.Errorf("%s: %+v", tc.req, m)
		}
		m.Close()
	}
}
