// Package unixsock holds what the agent's unix sockets share, whatever
// protocol they speak (supervisor/ociproto for runtimes, supervisor/lxcproto
// for LXC monitors): creating a root-only socket, and taking the fds a peer
// sent with SCM_RIGHTS.
package unixsock

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Rights returns the fds of every SCM_RIGHTS message in oob, each made
// close-on-exec; unparsable control data yields none.
func Rights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var out []int
	for i := range msgs {
		if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			out = append(out, fds...)
		}
	}
	for _, fd := range out {
		unix.CloseOnExec(fd)
	}
	return out
}

// Listen creates a socket of network ("unix" or "unixpacket") at path,
// mode 0600. A stale socket is replaced; one another process still
// listens on is an error.
func Listen(network, path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.Dial(network, path); err == nil {
		_ = c.Close()
		return nil, fmt.Errorf("%s: another agent is listening there", path)
	}
	_ = os.Remove(path)
	ln, err := net.ListenUnix(network, &net.UnixAddr{Name: path, Net: network})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, err
	}
	return ln, nil
}
