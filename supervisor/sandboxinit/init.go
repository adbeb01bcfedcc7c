package sandboxinit

import (
	"fmt"
	"github.com/loopvisor/loopvisor/loopctl/view"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/notify"
)

// Arg is argv[1] of the re-executed sandbox init.
const Arg = "__sandbox-init"

// File descriptors the supervisor hands the sandbox init.
const (
	SockFD  = 3 // unix socket to the supervisor
	ViewFD0 = 4 // first of len(view.Mounts) detached view mounts
)

// ProcFD0 is the first of len(view.ProcFiles) detached view files, which
// go over the new /proc's files.
var ProcFD0 = ViewFD0 + len(view.Mounts)

// Maybe runs the sandbox init and never returns if this process was
// started as one. Call it first thing in main.
func Maybe() {
	if len(os.Args) < 2 || os.Args[1] != Arg {
		return
	}
	code, err := sandboxInit(os.Args[2:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "loopvisor: sandbox: %v\n", err)
		os.Exit(125)
	}
	os.Exit(code)
}

func sandboxInit(argv []string) (int, error) {
	bare, trapMount, user, reexecuted := false, false, false, false
	for len(argv) > 0 && argv[0] != "--" {
		switch argv[0] {
		case "--bare":
			bare = true
		case "--mount":
			trapMount = true
		case "--user":
			user = true
		case ReexecFlag:
			user, reexecuted = true, true

		default:
			return 0, fmt.Errorf("unknown init flag %q", argv[0])
		}
		argv = argv[1:]
	}
	if len(argv) > 0 && argv[0] == "--" {
		argv = argv[1:]
	}
	if len(argv) == 0 {
		return 0, fmt.Errorf("no command")
	}
	sock := os.NewFile(SockFD, "supervisor")
	if user {
		if err := becomeRoot(sock, reexecuted); err != nil {
			return 0, err
		}
	}
	if os.Getuid() != 0 || os.Geteuid() != 0 {
		return 0, fmt.Errorf("sandbox init runs as uid %d, not as the sandbox's root", os.Getuid())
	}
	if user {
		if err := setupUserMounts(); err != nil {
			return 0, err
		}
	} else if err := setupMounts(bare); err != nil {
		return 0, err
	}
	if bare {
		_ = sock.Close()
		return runChild(argv)
	}
	prog, err := notify.Program(notify.Options{Mount: trapMount})
	if err != nil {
		return 0, err
	}
	lfd, err := notify.Install(prog)
	if err != nil {
		return 0, err
	}
	if err := unix.Sendmsg(int(sock.Fd()), []byte{'L'}, unix.UnixRights(lfd), nil, 0); err != nil {
		return 0, os.NewSyscallError("sendmsg", err)
	}
	_ = unix.Close(lfd)
	// Wait for the supervisor to serve the listener (or to tell us it
	// cannot).
	ack := make([]byte, 1)
	if n, err := sock.Read(ack); err != nil || n != 1 || ack[0] != 'A' {
		return 0, fmt.Errorf("supervisor did not take the listener")
	}
	_ = sock.Close()
	return runChild(argv)
}

func setupMounts(bare bool) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return os.NewSyscallError("make / private", err)
	}
	if bare {
		return mountProc()
	}
	for i, m := range view.Mounts {
		if err := attachPrivate(ViewFD0+i, m.Target); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return os.NewSyscallError("mount /dev/pts", err)
	}
	if err := unix.Mount("shm", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return os.NewSyscallError("mount /dev/shm", err)
	}
	if err := mountProc(); err != nil {
		return err
	}
	for i, m := range view.ProcFiles {
		if err := attachPrivate(ProcFD0+i, m.Target); err != nil {
			return err
		}
	}
	return nil
}

// attachPrivate moves the detached mount on fd, a private clone the
// supervisor passed, to target, and closes fd.
func attachPrivate(fd int, target string) error {
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach private %s: %w", target, os.NewSyscallError("move_mount", err))
	}
	_ = unix.Close(fd)
	return nil
}

// mountProc gives the new pid namespace its own /proc; sysfs stays the
// host's, with the view over its block directories.
func mountProc() error {
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return os.NewSyscallError("mount /proc", err)
	}
	return nil
}

// Forwarded are the signals init passes on to the command.
var Forwarded = []os.Signal{
	unix.SIGTERM, unix.SIGINT, unix.SIGQUIT, unix.SIGHUP, unix.SIGUSR1,
	unix.SIGUSR2, unix.SIGWINCH, unix.SIGCONT, unix.SIGALRM,
}

// runChild runs argv as init's child, forwards signals to it, reaps every
// orphan of the pid namespace, and returns the child's exit status.
func runChild(argv []string) (int, error) {
	path := argv[0]
	if filepath.Base(path) == path {
		if p, err := lookPath(path); err == nil {
			path = p
		} else {
			fmt.Fprintf(os.Stderr, "loopvisor: %s: command not found\n", argv[0])
			return 127, nil
		}
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, Forwarded...)
	_, terr := unix.IoctlGetTermios(0, unix.TCGETS)
	tty := terr == nil
	p, err := os.StartProcess(path, argv, &os.ProcAttr{
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Env:   os.Environ(),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "loopvisor: %s: %v\n", argv[0], err)
		return 126, nil
	}
	go func() {
		for s := range sigs {
			// A terminal delivers ^C and ^\ to the whole foreground group
			// already.
			if tty && (s == unix.SIGINT || s == unix.SIGQUIT) {
				continue
			}
			_ = p.Signal(s)
		}
	}()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, os.NewSyscallError("wait4", err)
		}
		if pid != p.Pid {
			continue // an orphan reparented to us
		}
		switch {
		case ws.Exited():
			return ws.ExitStatus(), nil
		case ws.Signaled():
			return 128 + int(ws.Signal()), nil
		}
	}
}

func lookPath(file string) (string, error) {
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && unix.Access(p, unix.X_OK) == nil {
			return p, nil
		}
	}
	return "", syscall.ENOENT
}
