package view

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func asUser(t *testing.T, path string, uid int, groups ...int) bool {
	t.Helper()
	cmd := exec.Command("sh", "-c", `test -r "$1" && test -w "$1"`, "sh", path)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(groups[0])}
	for _, g := range groups {
		cred.Groups = append(cred.Groups, uint32(g))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	return cmd.Run() == nil
}

// TestNodeGrantRevoke: a node is owned by host root; the sandbox's root
// gets the owner's bits, users in the node's group the group bits, others
// the other bits, as on the host. After revoke nobody but host root
// opens it, and the sandbox's root cannot chmod it back; grant restores.
func TestNodeGrantRevoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chown, ACLs, other users")
	}
	// Not t.TempDir: its parent is 0700, and other users must reach the file.
	dir, err := os.MkdirTemp("", "loopctl-node-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A regular file stands in for the device node: the permission rules
	// are the same and opening it creates no device.
	p := filepath.Join(dir, "loop9")
	if err := os.WriteFile(p, nil, 0); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	const root, disk = 100000, 100006 // sandbox root; the host's disk group, mapped
	n := &nodeInode{f: os.NewFile(uintptr(fd), "loop9"), mode: 0o660, gid: disk, uid: root}
	defer func() { _ = n.f.Close() }()
	if err := n.grant(); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, os.ErrPermission) {
			t.Skipf("no ACLs on %s: %v", dir, err)
		}
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 0 || st.Gid != disk {
		t.Errorf("owner %d:%d, want 0:%d", st.Uid, st.Gid, disk)
	}
	check := func(when string, want map[string]bool) {
		t.Helper()
		got := map[string]bool{
			"sandbox root":    asUser(t, p, root, root),
			"user in disk":    asUser(t, p, root+1000, root+1000, disk),
			"user not in it":  asUser(t, p, root+1000, root+1000),
			"other uid, root": asUser(t, p, 300000, 300000),
		}
		for who, w := range want {
			if got[who] != w {
				t.Errorf("%s: %s may open: %v, want %v", when, who, got[who], w)
			}
		}
	}
	check("granted", map[string]bool{"sandbox root": true, "user in disk": true, "user not in it": false, "other uid, root": false})
	if err := n.revoke(); err != nil {
		t.Fatal(err)
	}
	check("revoked", map[string]bool{"sandbox root": false, "user in disk": false, "user not in it": false, "other uid, root": false})
	// The sandbox's root is not the owner: it cannot give itself access back.
	cmd := exec.Command("chmod", "666", p)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: root, Gid: root}}
	if cmd.Run() == nil {
		t.Errorf("the sandbox's root could chmod a revoked node")
	}
	if err := n.grant(); err != nil {
		t.Fatal(err)
	}
	check("granted again", map[string]bool{"sandbox root": true, "user in disk": true, "user not in it": false})
}
