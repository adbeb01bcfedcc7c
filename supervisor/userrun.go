package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/supervisor/ociproto"
	"github.com/loopvisor/loopvisor/supervisor/sandboxinit"
)

// UserRunConfig is what `loopvisor run` needs when an unprivileged user
// starts it: the sandbox's user namespace maps its root to the user's own
// uid and gid and its ids 1..Size to the user's subordinate ids (newuidmap,
// newgidmap, as rootless podman does), and the system agent serves its
// listener.
type UserRunConfig struct {
	Argv   []string
	Socket string // the agent's --user-socket
	UIDMap IDMap  // the sandbox's uids 1..Size; zero: the user's first /etc/subuid range (at most 65536 ids)
	GIDMap IDMap  // likewise from /etc/subgid
	Mount  bool   // trap mount calls
	Bare   bool   // no filter, no agent: shows what fails without loopvisor
	Log    *logrus.Logger
}

// DefaultUserSocket is the agent's user socket unless --user-socket says
// otherwise.
const DefaultUserSocket = "/run/loopvisor-user/agent.sock"

// UserMaps returns the sandbox maps of the calling user: its first
// /etc/subuid and /etc/subgid ranges, at most 65536 ids each.
func UserMaps() (uid, gid IDMap, err error) {
	name := strconv.Itoa(os.Getuid())
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	pick := func(file string) (IDMap, error) {
		rs := subIDRanges(file, name, os.Getuid())
		if len(rs) == 0 {
			return IDMap{}, fmt.Errorf("user %s has no range in %s: ask the administrator for one (usermod --add-subuids/--add-subgids)", name, file)
		}
		m := IDMap{Host: int(rs[0].Start), Size: int(rs[0].Count)}
		if m.Size > 65536 {
			m.Size = 65536
		}
		return m, nil
	}
	if uid, err = pick(SubIDFiles.UID); err != nil {
		return
	}
	gid, err = pick(SubIDFiles.GID)
	return
}

// RunAsUser runs cfg.Argv in a sandbox an unprivileged user makes itself,
// served by the system agent at cfg.Socket, and returns its exit status.
func RunAsUser(cfg UserRunConfig) (int, error) {
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if cfg.UIDMap.Size == 0 || cfg.GIDMap.Size == 0 {
		uid, gid, err := UserMaps()
		if err != nil {
			return 0, err
		}
		if cfg.UIDMap.Size == 0 {
			cfg.UIDMap = uid
		}
		if cfg.GIDMap.Size == 0 {
			cfg.GIDMap = gid
		}
	}
	ours, theirs, err := initPair()
	if err != nil {
		return 0, err
	}
	defer func() { _ = ours.Close() }()
	args := []string{sandboxinit.Arg, "--user"}
	if cfg.Bare {
		args = append(args, "--bare")
	} else if cfg.Mount {
		args = append(args, "--mount")
	}
	cmd := initCommand(args, cfg.Argv, []*os.File{theirs}, &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID,
		Pdeathsig:  unix.SIGKILL,
	})
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, sandboxinit.Forwarded...)
	defer signal.Stop(sigs)
	err = cmd.Start()
	_ = theirs.Close()
	if err != nil {
		return 0, fmt.Errorf("start sandbox: %w", err)
	}
	pid := cmd.Process.Pid
	log := cfg.Log.WithField("init_pid", pid)
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()
	abort := func(err error) (int, error) {
		_ = cmd.Process.Kill()
		if werr := <-waitc; werr != nil {
			log.WithError(werr).Debug("sandbox init killed after a failed set-up")
		}
		return 125, err
	}
	if err := writeMaps(pid, os.Getuid(), os.Getgid(), cfg.UIDMap, cfg.GIDMap); err != nil {
		return abort(err)
	}
	if _, err := ours.Write([]byte{sandboxinit.MapsWritten}); err != nil {
		return abort(fmt.Errorf("sandbox init: %w", err))
	}
	if !cfg.Bare {
		lfd, err := recvListener(ours, waitc)
		if err != nil {
			return abort(fmt.Errorf("sandbox set-up failed: %w", err))
		}
		err = handToAgent(cfg.Socket, pid, lfd)
		_ = unix.Close(lfd)
		if err != nil {
			return abort(err)
		}
		log.WithFields(logrus.Fields{"uid_map": fmt.Sprintf("0:%d:1,1:%d:%d", os.Getuid(), cfg.UIDMap.Host, cfg.UIDMap.Size), "agent": cfg.Socket}).Info("sandbox started; the agent serves it")
		if _, err := ours.Write([]byte{'A'}); err != nil {
			_ = cmd.Process.Kill()
		}
	}
	werr := forwardSignals(cmd, sigs, waitc)
	var exitErr *exec.ExitError
	if werr != nil && !errors.As(werr, &exitErr) {
		log.WithError(werr).Warn("waiting for the sandbox's init failed")
	}
	return exitCode(cmd), nil
}

// writeMaps maps the sandbox's id 0 to the user's own and 1..Size to its
// subordinate range with the setuid helpers, which check /etc/subuid and
// /etc/subgid themselves.
func writeMaps(pid, uid, gid int, subUID, subGID IDMap) error {
	for _, m := range []struct {
		prog string
		own  int
		sub  IDMap
	}{{"newuidmap", uid, subUID}, {"newgidmap", gid, subGID}} {
		args := []string{strconv.Itoa(pid), "0", strconv.Itoa(m.own), "1", "1", strconv.Itoa(m.sub.Host), strconv.Itoa(m.sub.Size)}
		out, err := exec.Command(m.prog, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s (package uidmap)", m.prog, strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// handToAgent sends the sandbox's listener to the agent's user socket as a
// runtime would and waits for its verdict.
func handToAgent(socket string, pid, lfd int) error {
	uc, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return fmt.Errorf("no loopvisor agent at %s: %w (it serves unprivileged users when started with --user-socket)", socket, err)
	}
	defer func() { _ = uc.Close() }()
	var st ociproto.ContainerProcessState
	st.Version = "1.0.2"
	st.Fds = []string{"seccompFd"}
	st.Pid = pid
	st.State.Version = st.Version
	st.State.ID = "loopvisor-run-" + NewID()
	st.State.Status = "creating"
	st.State.Pid = pid
	msg, err := json.Marshal(&st)
	if err != nil {
		return err
	}
	_ = uc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, _, err := uc.WriteMsgUnix(msg, unix.UnixRights(lfd), nil); err != nil {
		return fmt.Errorf("send the listener to the agent: %w", err)
	}
	var r UserReply
	if err := json.NewDecoder(uc).Decode(&r); err != nil {
		return fmt.Errorf("the agent did not answer: %w", err)
	}
	if !r.Served {
		return fmt.Errorf("the agent refused the sandbox: %s", r.Error)
	}
	return nil
}
