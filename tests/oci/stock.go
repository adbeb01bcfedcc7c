package oci

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// StockPackages are installed on top of mmdebstrap's minbase variant in
// every stock image: what the tests run inside (losetup, mount, umount,
// mkfs.ext4, e2fsck, debugfs, mksquashfs, mkfs.vfat, fsck.vfat, and
// sfdisk for partitioned images). None of them brings a FUSE helper;
// BuildStockImage checks that.
var StockPackages = []string{"util-linux", "mount", "e2fsprogs", "squashfs-tools", "dosfstools", "fdisk"}

// StockPrograms must be in every stock image (paths inside it).
var StockPrograms = []string{
	"usr/bin/sh", "usr/sbin/losetup", "usr/bin/mount", "usr/bin/umount",
	"usr/sbin/mkfs.ext4", "usr/sbin/e2fsck", "usr/sbin/debugfs",
	"usr/bin/mksquashfs", "usr/sbin/mkfs.vfat", "usr/sbin/fsck.vfat",
	"usr/sbin/sfdisk", "usr/bin/truncate",
}

// BootPackages are what the bootable-image test's root has on top of
// StockPackages (tests/bootable_test.go): grub-install and its modules for
// BIOS and UEFI, udevadm (grub-install asks it for a partition's sysfs
// path), cpio for the initramfs and a static busybox for the guest.
var BootPackages = []string{"grub-pc-bin", "grub-efi-amd64-bin", "grub2-common", "udev", "cpio", "busybox-static"}

// stockDpkgOpts leave documentation out of the image: it is a quarter of
// its size and nothing inside reads it (as Debian's "slim" images do).
var stockDpkgOpts = []string{
	"path-exclude=/usr/share/man/*",
	"path-exclude=/usr/share/doc/*",
	"path-include=/usr/share/doc/*/copyright",
	"path-exclude=/usr/share/info/*",
	"path-exclude=/usr/share/locale/*",
}

// stockFormat changes whenever the way images are built changes, so that
// caches made by an older builder are not reused.
const stockFormat = "1"

// fuseHelper matches a program name that would let an image serve a FUSE
// mount itself: fuse2fs, squashfuse, fusefat, fusermount3, mount.fuse3,
// fuse-overlayfs and the like. Stock images must have none, so that tests
// prove loopvisor brings its own helpers.
var fuseHelper = regexp.MustCompile(`fuse`)

// CacheDir is where stock images are kept between runs:
// $LOOPVISOR_CACHE if set, else /var/cache/loopvisor-test.
func CacheDir() string {
	if d := os.Getenv("LOOPVISOR_CACHE"); d != "" {
		return d
	}
	return "/var/cache/loopvisor-test"
}

// Mirror is the Debian mirror mmdebstrap uses: $LOOPVISOR_DEBIAN_MIRROR,
// or "" for mmdebstrap's default (deb.debian.org with the updates and
// security suites of a stable release).
func Mirror() string { return os.Getenv("LOOPVISOR_DEBIAN_MIRROR") }

var distName = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

// StockImagePath returns where the cached tarball of dist is (or will be):
// CacheDir()/debian-DIST-KEY.tar, KEY a hash of everything the build
// depends on (dist, variant, packages, dpkg options, mirror, architecture,
// builder format).
func StockImagePath(dist string) string { return imagePath(dist, nil) }

func imagePath(dist string, extra []string) string {
	pkgs := imagePackages(extra)
	sort.Strings(pkgs)
	h := sha256.New()
	_, _ = fmt.Fprintf(h, "format=%s\ndist=%s\nvariant=minbase\narch=%s\nmirror=%s\npackages=%s\ndpkgopts=%s\n",
		stockFormat, dist, runtime.GOARCH, Mirror(), strings.Join(pkgs, ","), strings.Join(stockDpkgOpts, ","))
	return filepath.Join(CacheDir(), fmt.Sprintf("debian-%s-%s.tar", dist, hex.EncodeToString(h.Sum(nil))[:12]))
}

func imagePackages(extra []string) []string {
	return append(append([]string(nil), StockPackages...), extra...)
}

var pkgName = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]*$`)

// StockImage returns the tarball of a stock Debian root file system for
// dist ("bookworm", "trixie"), building it with BuildStockImage if the
// cache does not have it yet. Concurrent callers (other test processes,
// CI's prebuild) wait on a lock in the cache directory instead of building
// twice. Needs root and the Debian mirror for a build, neither for a hit.
func StockImage(dist string) (string, error) { return StockImageWith(dist) }

// StockImageWith is StockImage with more Debian packages installed (unmodified,
// from the same mirror): a different tarball, cached likewise.
func StockImageWith(dist string, extra ...string) (string, error) {
	if !distName.MatchString(dist) {
		return "", fmt.Errorf("oci: bad distribution name %q", dist)
	}
	for _, p := range extra {
		if !pkgName.MatchString(p) {
			return "", fmt.Errorf("oci: bad package name %q", p)
		}
	}
	path := imagePath(dist, extra)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(filepath.Dir(path), ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", err
	}
	defer func() { _ = lock.Close() }() // drops the flock; nothing was written
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(path); err == nil { // built while we waited
		return path, nil
	}
	if err := buildImage(dist, path, imagePackages(extra)); err != nil {
		return "", err
	}
	return path, nil
}

// BuildTimeout bounds one mmdebstrap run (about 20 s here).
var BuildTimeout = 10 * time.Minute

// BuildStockImage runs
//
//	mmdebstrap --variant=minbase --include=StockPackages --format=tar DIST OUT
//
// (with the documentation left out, see stockDpkgOpts) into a temporary
// file next to out, checks it with CheckStockImage and renames it to out.
func BuildStockImage(dist, out string) error { return buildImage(dist, out, StockPackages) }

func buildImage(dist, out string, pkgs []string) (err error) {
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return fmt.Errorf("oci: mmdebstrap is not installed (apt-get install -y mmdebstrap): %w", err)
	}
	tmp := fmt.Sprintf("%s.partial-%d", out, os.Getpid())
	defer func() { err = errors.Join(err, removeStale(tmp)) }()
	args := []string{"--variant=minbase", "--include=" + strings.Join(pkgs, ","), "--format=tar", "--quiet"}
	for _, o := range stockDpkgOpts {
		args = append(args, "--dpkgopt="+o)
	}
	args = append(args, dist, tmp)
	if m := Mirror(); m != "" {
		args = append(args, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), BuildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	cmd.WaitDelay = 10 * time.Second
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	cmd.Stdin = strings.NewReader("")
	fmt.Fprintf(os.Stderr, "oci: building stock image %s with mmdebstrap (once; cached afterwards)\n", out)
	start := time.Now()
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %v", BuildTimeout)
		}
		return fmt.Errorf("oci: mmdebstrap %s: %w\n%s", strings.Join(args, " "), err, output.Bytes())
	}
	if err := CheckStockImage(tmp); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "oci: built stock image %s in %.1fs\n", out, time.Since(start).Seconds())
	return os.Rename(tmp, out)
}

// CheckStockImage reports an error if the tarball lacks one of
// StockPrograms (as a file or a symlink) or ships a FUSE helper (a name
// with "fuse" in a bin or sbin directory).
func CheckStockImage(tarball string) error {
	f, err := os.Open(tarball)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	have := map[string]bool{}
	var helpers []string
	tr := tar.NewReader(bufio.NewReaderSize(f, 1<<20))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("oci: %s: %w", tarball, err)
		}
		name := strings.TrimPrefix(filepath.Clean("/"+h.Name), "/")
		have[name] = true
		if strings.Contains(filepath.Dir(name), "bin") && fuseHelper.MatchString(filepath.Base(name)) {
			helpers = append(helpers, name)
		}
	}
	var missing []string
	for _, p := range StockPrograms {
		if !have[p] {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 || len(helpers) > 0 {
		return fmt.Errorf("oci: stock image %s: missing %v, FUSE helpers %v", tarball, missing, helpers)
	}
	return nil
}

// UnpackShifted unpacks tarball into dir (created 0755 if missing) with
// every owner shifted: uid u becomes u+shift, gid g becomes g+shift, so
// that the tree looks as the tarball says from inside a user namespace
// that maps 0 to shift. Modes are applied after the owners (chown clears
// setuid and setgid bits), so setuid programs and files of groups such as
// shadow stay intact. Symlinks and hard links are kept; device nodes and
// FIFOs are skipped (runc and crun mount /dev themselves); extended
// attributes are not restored (minbase has none that matter here).
// Regular files and symlinks keep their modification times.
func UnpackShifted(tarball, dir string, shift int) error {
	f, err := os.Open(tarball)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	inside := func(name string) (string, error) {
		clean := filepath.Clean("/" + name)
		if clean == "/" {
			return root, nil
		}
		p := filepath.Join(root, clean)
		// A member must not reach through a symlink the archive made.
		if parent, err := filepath.EvalSymlinks(filepath.Dir(p)); err != nil {
			return "", err
		} else if parent != root && !strings.HasPrefix(parent, root+"/") {
			return "", fmt.Errorf("oci: %s: %s leaves the root", tarball, name)
		}
		return p, nil
	}
	buf := make([]byte, 1<<20)
	tr := tar.NewReader(bufio.NewReaderSize(f, 1<<20))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("oci: %s: %w", tarball, err)
		}
		p, err := inside(h.Name)
		if err != nil {
			return err
		}
		uid, gid := h.Uid+shift, h.Gid+shift
		mode := uint32(h.Mode & 0o7777)
		switch h.Typeflag {
		case tar.TypeDir:
			if fi, err := os.Lstat(p); err == nil && !fi.IsDir() {
				// chmod would follow a symlink
				if err := removeStale(p); err != nil {
					return err
				}
			}
			if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
				return err
			}
			if err := os.Lchown(p, uid, gid); err != nil {
				return err
			}
			if err := syscall.Chmod(p, mode); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := writeFile(p, tr, buf, uid, gid, mode); err != nil {
				return err
			}
			setTime(p, h.ModTime)
		case tar.TypeSymlink:
			if err := removeStale(p); err != nil {
				return err
			}
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
			if err := os.Lchown(p, uid, gid); err != nil {
				return err
			}
			setTime(p, h.ModTime)
		case tar.TypeLink:
			target, err := inside(h.Linkname)
			if err != nil {
				return err
			}
			if err := removeStale(p); err != nil {
				return err
			}
			if err := os.Link(target, p); err != nil {
				return err
			}
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			// /dev is the runtime's.
		default:
			return fmt.Errorf("oci: %s: %s has unsupported type %q", tarball, h.Name, h.Typeflag)
		}
	}
}

func writeFile(p string, r io.Reader, buf []byte, uid, gid int, mode uint32) error {
	if err := removeStale(p); err != nil {
		return err
	}
	out, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(out, r, buf); err != nil {
		return errors.Join(err, out.Close())
	}
	if err := out.Chown(uid, gid); err != nil {
		return errors.Join(err, out.Close())
	}
	if err := syscall.Fchmod(int(out.Fd()), mode); err != nil { // after chown: setuid survives
		return errors.Join(err, out.Close())
	}
	return out.Close()
}

// removeStale removes p if it exists.
func removeStale(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// setTime sets p's access and modification times to t, not following a
// symlink; errors are ignored (times are a courtesy).
func setTime(p string, t time.Time) {
	ts := unix.NsecToTimespec(t.UnixNano())
	_ = unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// StockRootfs returns a new directory (/tmp/loopvisor-stock-DIST-XXXX,
// 0755, reachable by the container's root) holding a fresh copy of the
// stock image of dist, owners shifted by HostID. The caller removes it.
func StockRootfs(dist string) (string, error) { return StockRootfsWith(dist) }

// StockRootfsWith is StockRootfs of StockImageWith(dist, extra...).
func StockRootfsWith(dist string, extra ...string) (string, error) {
	img, err := StockImageWith(dist, extra...)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "loopvisor-stock-"+dist+"-")
	if err != nil {
		return "", err
	}
	if err := UnpackShifted(img, dir, HostID); err != nil {
		return "", errors.Join(err, os.RemoveAll(dir))
	}
	if err := CheckReachable(dir); err != nil {
		return "", errors.Join(err, os.RemoveAll(dir))
	}
	return dir, nil
}

// NewStockBundle is NewBundle with the stock Debian image of dist as the
// root file system instead of the host's programs: dir/rootfs is a fresh
// copy, owners shifted by HostID (so the container's root owns its files,
// as with an image pulled by a rootless engine). programs (absolute host
// paths) are copied in at the same paths, without their libraries: they
// must run against the image's own (a C program linked to glibc only
// does).
func NewStockBundle(dir, dist string, args []string, programs ...string) (*Bundle, error) {
	img, err := StockImage(dist)
	if err != nil {
		return nil, err
	}
	b, err := newBundle(dir)
	if err != nil {
		return nil, err
	}
	if err := UnpackShifted(img, b.Rootfs, HostID); err != nil {
		return nil, err
	}
	for _, p := range programs {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("oci: %s: want an absolute host path", p)
		}
		if err := copyFile(p, filepath.Join(b.Rootfs, p)); err != nil {
			return nil, err
		}
	}
	return b, b.writeDefaultSpec(args)
}

// Owner is what a path in a shifted root file system must be: its owner
// and group inside the container (HostID is added) and its mode.
type Owner struct {
	Path     string
	UID, GID int
	Mode     os.FileMode
}

// CheckShifted returns what differs between the paths under root and
// want, one message per path; an unreadable path is a message too.
func CheckShifted(root string, want []Owner) []string {
	var bad []string
	for _, c := range want {
		fi, err := os.Lstat(filepath.Join(root, c.Path))
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			bad = append(bad, fmt.Sprintf("%s: no syscall.Stat_t in %T", c.Path, fi.Sys()))
			continue
		}
		if int(st.Uid) != c.UID+HostID || int(st.Gid) != c.GID+HostID || fi.Mode() != c.Mode {
			bad = append(bad, fmt.Sprintf("%s: %d:%d %v, want %d:%d %v", c.Path, st.Uid, st.Gid, fi.Mode(), c.UID+HostID, c.GID+HostID, c.Mode))
		}
	}
	return bad
}
