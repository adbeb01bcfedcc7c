package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// Seccomp is runtime-spec's linux.seccomp (LinuxSeccomp).
type Seccomp struct {
	DefaultAction    string    `json:"defaultAction"`
	DefaultErrnoRet  *uint     `json:"defaultErrnoRet,omitempty"`
	Architectures    []string  `json:"architectures,omitempty"`
	Flags            []string  `json:"flags,omitempty"`
	ListenerPath     string    `json:"listenerPath,omitempty"`
	ListenerMetadata string    `json:"listenerMetadata,omitempty"`
	Syscalls         []Syscall `json:"syscalls,omitempty"`
}

// Syscall is one rule (LinuxSyscall).
type Syscall struct {
	Names    []string     `json:"names"`
	Action   string       `json:"action"`
	ErrnoRet *uint        `json:"errnoRet,omitempty"`
	Args     []SeccompArg `json:"args,omitempty"`
}

// SeccompArg is an argument condition (LinuxSeccompArg). For
// SCMP_CMP_MASKED_EQ, Value is the mask and ValueTwo the value the masked
// argument must equal, as in libseccomp's SCMP_CMP_MASKED_EQ(mask, datum);
// both runc (libseccomp-golang MakeCondition(index, op, value, valueTwo))
// and crun (scmp_arg_cmp.datum_a = value, datum_b = valueTwo) pass them in
// that order.
type SeccompArg struct {
	Index    uint   `json:"index"`
	Value    uint64 `json:"value"`
	ValueTwo uint64 `json:"valueTwo"`
	Op       string `json:"op"`
}

// Architectures every loopvisor filter covers.
var Architectures = []string{"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"}

// IoctlNotify returns a rule that sends ioctl(fd, cmd, ...) to the agent
// for each cmd, comparing only the low 32 bits of the argument (the kernel
// truncates ioctl's cmd to unsigned int, so a 64-bit compare could be
// walked around with high bits set).
func IoctlNotify(cmds ...uint32) []Syscall {
	var rules []Syscall
	for _, cmd := range cmds {
		rules = append(rules, Syscall{
			Names:  []string{"ioctl"},
			Action: "SCMP_ACT_NOTIFY",
			Args:   []SeccompArg{{Index: 1, Value: 0xffffffff, ValueTwo: uint64(cmd), Op: "SCMP_CMP_MASKED_EQ"}},
		})
	}
	return rules
}

// LoopIoctls are the loop driver's ioctl commands (linux/loop.h).
var LoopIoctls = []uint32{
	0x4C00, 0x4C01, 0x4C02, 0x4C03, 0x4C04, 0x4C05, 0x4C06, 0x4C07, 0x4C08,
	0x4C09, 0x4C0A, 0x4C80, 0x4C81, 0x4C82,
}

// NotifySeccomp returns a filter that allows everything except rules,
// whose calls go to the agent listening on listenerPath.
func NotifySeccomp(listenerPath, metadata string, rules ...Syscall) *Seccomp {
	return &Seccomp{
		DefaultAction:    "SCMP_ACT_ALLOW",
		Architectures:    Architectures,
		ListenerPath:     listenerPath,
		ListenerMetadata: metadata,
		Syscalls:         rules,
	}
}

// ContainerProcessState is what the runtime sends the agent on
// listenerPath (runtime-spec specs-go ContainerProcessState): one message
// on a fresh connection, with the fds named in Fds passed as SCM_RIGHTS in
// the same order.
type ContainerProcessState struct {
	Version  string   `json:"ociVersion"`
	Fds      []string `json:"fds"`
	Pid      int      `json:"pid"`
	Metadata string   `json:"metadata,omitempty"`
	State    State    `json:"state"`
}

// State is the runtime-spec state of the container (`runc state` prints
// more fields than these).
type State struct {
	Version     string            `json:"ociVersion"`
	ID          string            `json:"id"`
	Status      string            `json:"status"`
	Pid         int               `json:"pid,omitempty"`
	Bundle      string            `json:"bundle"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// SeccompFdName is the name of the listener fd in ContainerProcessState.Fds.
const SeccompFdName = "seccompFd"

// RecvProcessState reads one ContainerProcessState and its fds from a
// connection the runtime opened on listenerPath. The fds are returned in
// the order of Fds; the caller closes them.
func RecvProcessState(conn *net.UnixConn) (*ContainerProcessState, []*os.File, error) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, syscall.CmsgSpace(16*4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, nil, err
	}
	var files []*os.File
	if oobn > 0 {
		msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, nil, err
		}
		for _, m := range msgs {
			fds, err := syscall.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, fd := range fds {
				syscall.CloseOnExec(fd)
				files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("fd-%d", fd)))
			}
		}
	}
	// On a bad message the received fds are dropped unused: closing
	// them cannot fail in a way that matters.
	closeAll := func() {
		for _, f := range files {
			_ = f.Close()
		}
	}
	// Both runtimes send the JSON with one sendmsg (runc compact, crun
	// pretty-printed with a trailing newline) and may keep the connection
	// open while the container runs, so read on only while the bytes so
	// far are not a complete JSON value, never until EOF.
	msg := append([]byte{}, buf[:n]...)
	for !json.Valid(msg) {
		k, err := conn.Read(buf)
		if k > 0 {
			msg = append(msg, buf[:k]...)
		}
		if err != nil {
			break
		}
	}
	var st ContainerProcessState
	if err := json.Unmarshal(msg, &st); err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("oci: bad ContainerProcessState %q: %w", msg, err)
	}
	if len(st.Fds) != len(files) {
		closeAll()
		return nil, nil, fmt.Errorf("oci: ContainerProcessState names %d fds, got %d", len(st.Fds), len(files))
	}
	return &st, files, nil
}

// SeccompFd returns the file named SeccompFdName among files.
func (s *ContainerProcessState) SeccompFd(files []*os.File) (*os.File, error) {
	for i, name := range s.Fds {
		if name == SeccompFdName && i < len(files) {
			return files[i], nil
		}
	}
	return nil, errors.New("oci: no seccompFd in ContainerProcessState")
}

// AgentSocket is a unix stream socket at a listenerPath that accepts the
// runtimes' connections, for tests that need to see what an agent gets.
type AgentSocket struct {
	Path string
	ln   *net.UnixListener
}

// ListenAgent listens on path (an existing socket file there is replaced).
func ListenAgent(path string) (*AgentSocket, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(true)
	return &AgentSocket{Path: path, ln: ln}, nil
}

// Accept waits up to timeout for the next connection and returns the
// ContainerProcessState and fds it carries. The connection is closed
// afterwards (the runtime does not wait for an answer).
func (a *AgentSocket) Accept(timeout time.Duration) (*ContainerProcessState, []*os.File, error) {
	if err := a.ln.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, nil, err
	}
	conn, err := a.ln.AcceptUnix()
	if err != nil {
		return nil, nil, err
	}
	// The runtime waits for no answer: a close error changes nothing.
	defer func() { _ = conn.Close() }()
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, nil, err
	}
	return RecvProcessState(conn)
}

// Close stops listening and removes the socket file.
func (a *AgentSocket) Close() error { return a.ln.Close() }
