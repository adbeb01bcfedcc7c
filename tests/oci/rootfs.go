package oci

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Binaries are the host programs BuildRootfs copies into every rootfs, found
// in PATH (with the sbin directories added).
var Binaries = []string{
	"sh", "busybox", "losetup", "mount", "umount", "mkfs.ext4", "blkid",
	"lsblk", "cat", "ls", "echo", "sleep", "dd", "sync", "e2fsck",
}

// lookPath is exec.LookPath over PATH plus the sbin directories, which a
// test's environment may lack.
func lookPath(name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	dirs := filepath.SplitList(os.Getenv("PATH"))
	dirs = append(dirs, "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("oci: %s not found in PATH or the sbin directories", name)
}

// BuildRootfs builds a minimal container root file system in dir, offline,
// from the host's own programs: Binaries plus extra (names looked up in
// PATH, or absolute host paths, each copied to the same path inside), with
// the shared libraries ldd names for each and the dynamic loader. Symlinked
// top-level directories of a merged-/usr host (/bin, /sbin, /lib, /lib64)
// are reproduced as the same symlinks.
//
// Everything belongs to host root (nobody:nogroup inside a user namespace
// container) and is world-readable, except /tmp (1777) and /mnt (0755),
// which belong to HostID:HostID, the container's root. dev, proc, sys, run,
// etc and root are created empty except for etc/passwd, etc/group,
// etc/mtab -> /proc/self/mounts and, when the host has it,
// etc/mke2fs.conf.
//
// dir itself is created 0755 if missing; runc resolves the rootfs as the
// container's root, so dir and all its parents must be searchable by
// HostID (see CheckReachable).
func BuildRootfs(dir string, extra ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	for _, top := range []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"} {
		target, err := os.Readlink("/" + top)
		if err != nil {
			continue // not a symlink (or absent) on this host
		}
		if !filepath.IsAbs(target) { // usr/lib64: create it, or copies through the link fail
			if err := os.MkdirAll(filepath.Join(dir, target), 0o755); err != nil {
				return err
			}
		}
		if err := os.Symlink(target, filepath.Join(dir, top)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	for _, d := range []string{"usr/bin", "usr/sbin", "usr/lib", "dev", "proc", "sys", "run", "etc", "root", "var/tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	for d, mode := range map[string]os.FileMode{"tmp": os.ModeSticky | 0o777, "mnt": 0o755} {
		p := filepath.Join(dir, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(p, mode); err != nil { // MkdirAll drops the sticky bit
			return err
		}
		if err := os.Chown(p, HostID, HostID); err != nil {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	if err := os.Symlink("/proc/self/mounts", filepath.Join(dir, "etc/mtab")); err != nil && !os.IsExist(err) {
		return err
	}
	if _, err := os.Stat("/etc/mke2fs.conf"); err == nil {
		if err := copyFile("/etc/mke2fs.conf", filepath.Join(dir, "etc/mke2fs.conf")); err != nil {
			return err
		}
	}
	for _, name := range append(append([]string{}, Binaries...), extra...) {
		if err := CopyIn(dir, name); err != nil {
			return err
		}
	}
	return nil
}

// CopyIn copies the host program name (looked up in PATH and the sbin
// directories unless it contains a slash) into rootfs at the same path,
// with every shared library ldd lists for it and the dynamic loader.
// Symlinks are followed: the rootfs gets a regular file with the target's
// content and mode. Statically linked programs are copied alone.
func CopyIn(rootfs, name string) error {
	p, err := lookPath(name)
	if err != nil {
		return err
	}
	if err := copyFile(p, filepath.Join(rootfs, p)); err != nil {
		return err
	}
	libs, err := Libraries(p)
	if err != nil {
		return err
	}
	for _, lib := range libs {
		if err := copyFile(lib, filepath.Join(rootfs, lib)); err != nil {
			return err
		}
	}
	return nil
}

// Libraries returns the absolute paths of the shared libraries and the
// dynamic loader that `ldd path` lists (the vDSO has no path and is
// skipped). A static program, for which ldd says "not a dynamic
// executable" or "statically linked", has none.
func Libraries(path string) ([]string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("ldd", path)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	all := stdout.String() + stderr.String()
	if strings.Contains(all, "not a dynamic executable") || strings.Contains(all, "statically linked") {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("oci: ldd %s: %w: %s", path, err, strings.TrimSpace(all))
	}
	return parseLdd(stdout.String())
}

// parseLdd extracts library paths from ldd's output, whose lines look like
//
//	linux-vdso.so.1 (0x00007ffd...)
//	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f...)
//	/lib64/ld-linux-x86-64.so.2 (0x00007f...)
//	libfoo.so.1 => not found
func parseLdd(out string) ([]string, error) {
	var libs []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if name, rest, ok := strings.Cut(line, "=>"); ok {
			rest = strings.TrimSpace(rest)
			if strings.HasPrefix(rest, "not found") {
				return nil, fmt.Errorf("oci: ldd: %s not found", strings.TrimSpace(name))
			}
			if f := strings.Fields(rest); len(f) > 0 && strings.HasPrefix(f[0], "/") {
				libs = append(libs, f[0])
			}
			continue
		}
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "/") {
			libs = append(libs, f[0])
		}
	}
	return libs, sc.Err()
}

// copyFile copies src's content (following symlinks) to dst with src's
// permission bits, creating dst's parent directories 0755. An existing dst
// is replaced.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".oci-tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		return errors.Join(err, out.Close(), os.Remove(tmp))
	}
	if err := out.Close(); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	if err := os.Chmod(tmp, fi.Mode().Perm()); err != nil { // umask
		return errors.Join(err, os.Remove(tmp))
	}
	return os.Rename(tmp, dst)
}

// CheckReachable reports an error naming the first directory on path's
// way from / that uid HostID could not search (no o+x, not owned by it):
// runc and crun resolve the rootfs as the container's root, which has no
// capabilities over host-root-owned directories, so a 0700 parent such as
// the one os.MkdirTemp or t.TempDir creates makes `run` fail with EACCES.
func CheckReachable(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	p := "/"
	for _, part := range strings.Split(strings.TrimPrefix(abs, "/"), "/") {
		if part == "" {
			continue
		}
		p = filepath.Join(p, part)
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			break
		}
		if fi.Mode().Perm()&0o001 == 0 && !ownedBy(fi, HostID) {
			return fmt.Errorf("oci: %s (mode %04o) is not searchable by the container's root (host uid %d): chmod it 0755 or place the bundle elsewhere", p, fi.Mode().Perm(), HostID)
		}
	}
	return nil
}
