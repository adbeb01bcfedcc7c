// Package ociproto is the OCI runtime-spec seccomp agent protocol, as runc
// and crun speak it to linux.seccomp.listenerPath: one connection per
// process that loads the filter, one JSON ContainerProcessState message,
// and the listener (and other fds) as SCM_RIGHTS with the first bytes.
// The same socket answers `loopvisor status` (StatusRequest).
//
// Design: Read decodes one message from a connection within a deadline,
// in 4 KiB chunks up to MaxMessage, and takes ownership of every fd that
// came with it; nothing in a message is trusted beyond its syntax (the
// agent checks pids and namespaces on kernel objects).
//
// When not to use this package: for LXC's seccomp notify proxy, which
// speaks a different (SOCK_SEQPACKET, per-notification) protocol.
package ociproto

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/loopvisor/loopvisor/internal/unixsock"
	"golang.org/x/sys/unix"
)

// ContainerProcessState is what an OCI runtime sends to
// linux.seccomp.listenerPath (runtime-spec, config-linux.md), with one
// SCM_RIGHTS fd per entry of Fds.
type ContainerProcessState struct {
	Version  string   `json:"ociVersion"`
	Fds      []string `json:"fds"`
	Pid      int      `json:"pid"`
	Metadata string   `json:"metadata"`
	State    struct {
		Version     string            `json:"ociVersion"`
		ID          string            `json:"id"`
		Status      string            `json:"status"`
		Pid         int               `json:"pid"`
		Bundle      string            `json:"bundle"`
		Annotations map[string]string `json:"annotations"`
	} `json:"state"`
}

// MaxMessage bounds a runtime's ContainerProcessState (annotations
// included).
const MaxMessage = 1 << 20

// StatusRequest is what `loopvisor status` sends instead of a runtime's
// ContainerProcessState.
const StatusRequest = `{"loopvisor":"status"}`

// InfoRequest is what `loopvisor oci-config` and `loopvisor status
// --node-dir` send to learn where the agent keeps its nodes.
const InfoRequest = `{"loopvisor":"info"}`

// ReadTimeout bounds how long a peer may take to send its message.
const ReadTimeout = 10 * time.Second

// Message is one decoded connection.
type Message struct {
	Status bool                   // a status request, not a runtime's
	Info   bool                   // an info request (InfoRequest)
	State  *ContainerProcessState // the runtime's message
	fds    []int
}

// TakeFD returns the fd the runtime named name (e.g. "seccompFd") and
// gives up the message's ownership of it; -1 if there is none.
func (m *Message) TakeFD(name string) int {
	if m.State == nil {
		return -1
	}
	for i, n := range m.State.Fds {
		if n == name && i < len(m.fds) && m.fds[i] >= 0 {
			fd := m.fds[i]
			m.fds[i] = -1
			return fd
		}
	}
	return -1
}

// Close closes every fd of the message not taken.
func (m *Message) Close() {
	for i, fd := range m.fds {
		if fd >= 0 {
			_ = unix.Close(fd)
			m.fds[i] = -1
		}
	}
}

// ErrTruncated and ErrTooLong are what Read says of a bad message.
var (
	ErrTruncated = errors.New("truncated runtime message")
	ErrTooLong   = errors.New("runtime message too long")
)

// Read reads one message from conn. The caller closes the returned
// message (its fds) even on error.
func Read(conn *net.UnixConn) (*Message, error) {
	_ = conn.SetReadDeadline(time.Now().Add(ReadTimeout))
	// Runtimes send a few hundred bytes; a burst of connections must not
	// cost 64 KiB each. Longer messages are read on below (the fds come
	// with the first bytes of a stream socket).
	buf := make([]byte, 4<<10)
	oob := make([]byte, unix.CmsgSpace(4*16))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	m := &Message{}
	if err != nil {
		return m, err
	}
	m.fds = unixsock.Rights(oob[:oobn])
	msg := append([]byte(nil), buf[:n]...)
	switch strings.TrimSpace(string(msg)) {
	case StatusRequest:
		m.Status = true
		return m, nil
	case InfoRequest:
		m.Info = true
		return m, nil
	}
	for !json.Valid(msg) {
		k, err := conn.Read(buf)
		if err != nil || k == 0 {
			return m, ErrTruncated
		}
		msg = append(msg, buf[:k]...)
		if len(msg) > MaxMessage {
			return m, ErrTooLong
		}
	}
	var st ContainerProcessState
	if err := json.Unmarshal(msg, &st); err != nil {
		return m, fmt.Errorf("malformed runtime message: %w", err)
	}
	m.State = &st
	return m, nil
}

// Listen creates the agent's socket (mode 0600; a stale socket is replaced).
func Listen(path string) (*net.UnixListener, error) { return unixsock.Listen("unix", path) }

// Query sends a status request to the agent at socket and decodes its
// answer into out.
func Query(socket string, out any) error { return QueryWith(socket, StatusRequest, out) }

// QueryWith sends request (StatusRequest, InfoRequest) to the agent at
// socket and decodes its answer into out.
func QueryWith(socket, request string, out any) error {
	conn, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return fmt.Errorf("no agent at %s: %w (is loopvisor agent running?)", socket, err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(request)); err != nil {
		return err
	}
	if err := json.NewDecoder(conn).Decode(out); err != nil {
		return fmt.Errorf("agent at %s: %w", socket, err)
	}
	return nil
}
