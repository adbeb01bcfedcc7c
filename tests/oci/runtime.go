package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Timeout bounds every runtime command this package runs.
var Timeout = 2 * time.Minute

// Runtime is one OCI runtime binary with a private state directory
// (--root), so that tests never see or disturb other containers.
type Runtime struct {
	Name string // "runc" or "crun"
	Path string // the binary
	Root string // --root, under /tmp

	// PrivateCgroupNS is set for crun on a host with hybrid cgroups (a
	// cgroup2 hierarchy at /sys/fs/cgroup/unified beside v1 controllers):
	// crun 1.8.1 refuses that layout ("cgroups in hybrid mode not
	// supported, drop all controllers from cgroupv2") with every
	// --cgroup-manager, so each crun command runs as
	//
	//	unshare -m sh -c 'umount /sys/fs/cgroup/unified && exec "$@"' sh crun ...
	//
	// unshare(1) makes its new mount namespace's mounts private, so the
	// unmount never reaches the host. crun then sees pure cgroup v1 and
	// its default cgroupfs manager works.
	PrivateCgroupNS bool
}

// Runtimes are the names New accepts.
var Runtimes = []string{"runc", "crun"}

// New returns runtime name ("runc" or "crun") with a fresh --root
// directory /tmp/oci-NAME-XXXX and a cleanup func that force-deletes every
// container left in it and removes the directory (Runtime.Cleanup). Call
// cleanup even when a test fails (t.Cleanup), and report its error.
func New(name string) (*Runtime, func() error, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, nil, fmt.Errorf("oci: %s is not installed (apt-get install -y runc crun): %w", name, err)
	}
	root, err := os.MkdirTemp("", "oci-"+name+"-")
	if err != nil {
		return nil, nil, err
	}
	r := &Runtime{Name: name, Path: path, Root: root, PrivateCgroupNS: name == "crun" && HybridCgroups()}
	return r, r.Cleanup, nil
}

// HybridCgroups reports whether the host mounts cgroup v1 controllers with
// a cgroup2 hierarchy at /sys/fs/cgroup/unified (systemd's "hybrid" mode).
func HybridCgroups() bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs("/sys/fs/cgroup/unified", &st); err != nil {
		return false
	}
	const cgroup2SuperMagic = 0x63677270
	return st.Type == cgroup2SuperMagic
}

// Command returns the command line `NAME --root ROOT args...`, wrapped for
// crun on hybrid-cgroup hosts (see PrivateCgroupNS).
func (r *Runtime) Command(ctx context.Context, args ...string) *exec.Cmd {
	argv := append([]string{r.Path, "--root", r.Root}, args...)
	if r.PrivateCgroupNS {
		argv = append([]string{"unshare", "-m", "sh", "-c", `umount /sys/fs/cgroup/unified && exec "$@"`, "sh"}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Version returns the first line of `NAME --version`.
func (r *Runtime) Version() (string, error) {
	out, err := exec.Command(r.Path, "--version").Output()
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return line, nil
}

// Result is the outcome of a foreground command.
type Result struct {
	Stdout, Stderr string
	Code           int // exit status; 128+N if killed by signal N
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.Code, r.Stdout, r.Stderr)
}

// run runs a runtime command with stdin and captures its output. err is
// set only when the command could not run or timed out; a non-zero exit
// is in Result.Code.
func (r *Runtime) run(stdin io.Reader, args ...string) (Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	cmd := r.Command(ctx, args...)
	var so, se bytes.Buffer
	if stdin == nil {
		stdin = strings.NewReader("") // a pipe, never /dev/null: see Start
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &so, &se
	err := cmd.Run()
	res := Result{Stdout: so.String(), Stderr: se.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("oci: %s %s: timed out after %v\n%s", r.Name, strings.Join(args, " "), Timeout, res)
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Code = 128 + int(ws.Signal())
		}
	case err != nil:
		return res, err
	}
	return res, nil
}

// runOK is run with stdin nil that turns a non-zero exit into an error
// carrying the output.
func (r *Runtime) runOK(args ...string) (Result, error) {
	res, err := r.run(nil, args...)
	if err == nil && res.Code != 0 {
		err = fmt.Errorf("oci: %s %s: %s", r.Name, strings.Join(args, " "), res)
	}
	return res, err
}

var idSeq atomic.Uint64

// NewID returns a container id unique on this host for this process:
// prefix-PID-N.
func NewID(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), idSeq.Add(1))
}

// Run runs the bundle in the foreground (`run --bundle DIR ID`) with a new
// unique id, waits for the container to exit and returns its output and
// exit status (runc and crun exit with the container's status). stdin may
// be nil. The container is deleted afterwards even if it failed; an error
// deleting it is returned if the run itself gave none.
func (r *Runtime) Run(b *Bundle, stdin io.Reader) (res Result, err error) {
	id := NewID("oci")
	defer func() {
		if derr := r.Delete(id); err == nil {
			err = derr
		}
	}()
	return r.run(stdin, "run", "--bundle", b.Dir, id)
}

// Container is a detached container of a Runtime.
type Container struct {
	ID      string
	Runtime *Runtime
	Bundle  *Bundle
	// Stdout and Stderr are the files that receive the init process's
	// output (and the runtime's own messages while it starts):
	// BUNDLE/ID.stdout and BUNDLE/ID.stderr.
	Stdout, Stderr string
}

// Start runs the bundle detached (`run -d --bundle DIR ID`) with a new
// unique id and returns once the init process runs. Its stdin is an empty
// pipe (EOF), its stdout and stderr the files named in Container. On
// failure the container is deleted and the error includes the runtime's
// messages.
//
// Never give a runtime /dev/null (exec.Cmd's default for nil stdio) as
// `run` stdio: crun 1.8.1 fchowns the stdio of `run` and `run -d` to the
// container's root, so the host's /dev/null becomes 100000:100000 (runc
// 1.1.5 skips /dev/null and changes only the uid of other stdio files).
func (r *Runtime) Start(b *Bundle) (*Container, error) {
	return r.StartID(b, NewID("oci"))
}

// StartID is Start with the container id chosen by the caller. Ids are
// unique only within one runtime's --root: two runtimes (or two roots) may
// each run a container called id at once.
func (r *Runtime) StartID(b *Bundle, id string) (*Container, error) {
	c := &Container{ID: id, Runtime: r, Bundle: b}
	stdin, w, err := os.Pipe()
	// Our copies of the container's stdio are closed once the runtime has
	// passed them on; nothing is written through them, so a close error
	// loses nothing.
	if err != nil {
		return nil, err
	}
	defer func() { _ = stdin.Close() }()
	if err := w.Close(); err != nil {
		return nil, err
	}
	c.Stdout = filepath.Join(b.Dir, c.ID+".stdout")
	c.Stderr = filepath.Join(b.Dir, c.ID+".stderr")
	so, err := os.Create(c.Stdout)
	if err != nil {
		return nil, err
	}
	defer func() { _ = so.Close() }()
	se, err := os.Create(c.Stderr)
	if err != nil {
		return nil, err
	}
	defer func() { _ = se.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	cmd := r.Command(ctx, "run", "-d", "--bundle", b.Dir, c.ID)
	// *os.File: the runtime exits while the container keeps them.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, so, se
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(c.Stderr)
		return nil, errors.Join(fmt.Errorf("oci: %s run -d %s: %w\n%s", r.Name, c.ID, err, msg), r.Delete(c.ID))
	}
	return c, nil
}

// Output returns what the init process wrote to stdout and stderr so far.
func (c *Container) Output() (stdout, stderr string) {
	o, _ := os.ReadFile(c.Stdout)
	e, _ := os.ReadFile(c.Stderr)
	return string(o), string(e)
}

// Exec runs args in the running container (`exec ID args...`, no tty)
// and returns its output and exit status.
func (c *Container) Exec(args ...string) (Result, error) {
	return c.ExecStdin(nil, args...)
}

// ExecStdin is Exec with stdin.
func (c *Container) ExecStdin(stdin io.Reader, args ...string) (Result, error) {
	return c.Runtime.run(stdin, append([]string{"exec", c.ID}, args...)...)
}

// Kill sends sig ("KILL", "TERM", "9", ...) to the init process.
func (c *Container) Kill(sig string) error {
	_, err := c.Runtime.runOK("kill", c.ID, sig)
	return err
}

// KillAll sends sig to every process of the container (`kill --all`),
// which both runtimes support.
func (c *Container) KillAll(sig string) error {
	_, err := c.Runtime.runOK("kill", "--all", c.ID, sig)
	return err
}

// Delete force-deletes the container (`delete -f`), killing what runs.
func (c *Container) Delete() error { return c.Runtime.Delete(c.ID) }

// State returns the container's runtime-spec state (`state ID`).
func (c *Container) State() (State, error) { return c.Runtime.State(c.ID) }

// Pid returns the host pid of the container's init process.
func (c *Container) Pid() (int, error) {
	st, err := c.State()
	if err != nil {
		return 0, err
	}
	if st.Pid <= 0 {
		return 0, fmt.Errorf("oci: container %s has no pid (status %s)", c.ID, st.Status)
	}
	return st.Pid, nil
}

// Wait waits until the container's status is "stopped" or d has passed.
func (c *Container) Wait(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		st, err := c.State()
		if err != nil {
			return err
		}
		if st.Status == "stopped" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("oci: container %s still %s after %v", c.ID, st.Status, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// State returns the state of container id.
func (r *Runtime) State(id string) (State, error) {
	res, err := r.runOK("state", id)
	if err != nil {
		return State{}, err
	}
	var st State
	if err := json.Unmarshal([]byte(res.Stdout), &st); err != nil {
		return State{}, fmt.Errorf("oci: %s state %s: %w: %q", r.Name, id, err, res.Stdout)
	}
	return st, nil
}

// Delete force-deletes container id; a container that does not exist is
// not an error.
func (r *Runtime) Delete(id string) error {
	res, err := r.run(nil, "delete", "-f", id)
	if err != nil {
		return err
	}
	if res.Code != 0 && !notExist(res.Stderr) {
		return fmt.Errorf("oci: %s delete -f %s: %s", r.Name, id, res)
	}
	return nil
}

func notExist(msg string) bool {
	return strings.Contains(msg, "does not exist") || strings.Contains(msg, "not found") ||
		strings.Contains(msg, "No such file")
}

// List returns the ids of the containers in the runtime's --root
// (`list -q`).
func (r *Runtime) List() ([]string, error) {
	res, err := r.runOK("list", "-q")
	if err != nil {
		return nil, err
	}
	return strings.Fields(res.Stdout), nil
}

// Cleanup force-deletes every container in the runtime's --root and
// removes the directory. It returns the first error but always tries
// everything.
func (r *Runtime) Cleanup() error {
	var first error
	ids, err := r.List()
	if err != nil {
		first = err
	}
	for _, id := range ids {
		if err := r.Delete(id); err != nil && first == nil {
			first = err
		}
	}
	if ids, err := r.List(); err == nil && len(ids) > 0 && first == nil {
		first = fmt.Errorf("oci: %s: containers left after cleanup: %v", r.Name, ids)
	}
	if err := os.RemoveAll(r.Root); err != nil && first == nil {
		first = err
	}
	return first
}
