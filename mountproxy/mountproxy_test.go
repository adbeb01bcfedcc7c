package mountproxy

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCleanFlags(t *testing.T) {
	for _, c := range []struct{ in, want uint64 }{
		{0xC0ED0000 | unix.MS_RDONLY, unix.MS_RDONLY},
		{0xC0ED0000, 0},
		// MS_PRIVATE|MS_SLAVE share bits with MS_MGC_VAL: without the
		// magic in the top 16 bits they are flags.
		{unix.MS_PRIVATE | unix.MS_SLAVE, unix.MS_PRIVATE | unix.MS_SLAVE},
		{0xdeadbeef00000000 | unix.MS_NOEXEC, unix.MS_NOEXEC},
	} {
		if got := CleanFlags(c.in); got != c.want {
			t.Errorf("CleanFlags(%#x) = %#x, want %#x", c.in, got, c.want)
		}
	}
	if isNewMount(unix.MS_BIND) || isNewMount(unix.MS_REMOUNT) || isNewMount(unix.MS_PRIVATE) || !isNewMount(unix.MS_RDONLY|unix.MS_NOSUID) {
		t.Error("isNewMount")
	}
}

func TestFlagString(t *testing.T) {
	if got := FlagString(unix.MS_RDONLY | unix.MS_NOEXEC | 1<<31); got != "MS_RDONLY|MS_NOEXEC|0x80000000" {
		t.Errorf("got %q", got)
	}
	if FlagString(0) != "0" {
		t.Error("zero")
	}
}

func TestFuseOptions(t *testing.T) {
	cases := []struct {
		helper string
		flags  uint64
		data   string
		want   string
		err    string
	}{
		{"fuse2fs", 0, "", "nosuid,nodev,allow_other,default_permissions,nonempty", ""},
		{"/usr/bin/fuse2fs", unix.MS_RDONLY | unix.MS_NOEXEC | unix.MS_NOATIME, "", "nosuid,nodev,allow_other,default_permissions,nonempty,ro,noexec", ""},
		{"fuse2fs", 0, "errors=panic,noload", "nosuid,nodev,allow_other,default_permissions,nonempty,errors=panic,norecovery", ""},
		{"fuse2fs", 0, "data=journal", "", "data=journal"},
		{"fuse2fs", 0, "errors=remount-ro", "", "errors=remount-ro"},
		{"fuse2fs", unix.MS_MANDLOCK, "", "", "MS_MANDLOCK"},
		{"squashfuse", unix.MS_SYNCHRONOUS, "offset=4096", "nosuid,nodev,allow_other,default_permissions,sync,offset=4096", ""},
		{"squashfuse", 0, "nonsense", "", "nonsense"},
		{"myhelper", 0, "anything=1", "nosuid,nodev,allow_other,default_permissions,anything=1", ""},
	}
	for _, c := range cases {
		got, err := fuseOptions(c.helper, c.flags, ParseData(c.data))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s %q: err %v, want one naming %q", c.helper, c.data, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s %#x %q: %q, %v; want %q", c.helper, c.flags, c.data, got, err, c.want)
		}
	}
}

func TestPolicy(t *testing.T) {
	p := DefaultPolicy()
	if !p.Serves("ext4") || !p.Serves("squashfs") || p.Serves("xfs") || p.Serves("tmpfs") {
		t.Fatal("default policy")
	}
	if err := p.AddFuse("vfat=fusefat"); err != nil || p.Fuse["vfat"] != "fusefat" {
		t.Fatal(err)
	}
	for _, bad := range []string{"vfat", "=x", "a b=c", "vfat="} {
		if p.AddFuse(bad) == nil {
			t.Errorf("AddFuse(%q) accepted", bad)
		}
	}
	if err := p.AllowKernel("ext4, xfs"); err != nil {
		t.Fatal(err)
	}
	if err := p.Resolve(map[string]bool{"vfat": true}); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Fuse["ext4"]; ok || !p.Kernel["ext4"] || !p.Serves("xfs") {
		t.Errorf("kernel types must leave the FUSE map: %+v", p)
	}
	q := DefaultPolicy()
	_ = q.AddFuse("ext4=fuse2fs")
	_ = q.AllowKernel("ext4")
	if err := q.Resolve(map[string]bool{"ext4": true}); err == nil {
		t.Error("a type in both --fuse and --allow-kernel-mount must be refused")
	}
	if _, err := HelperPath("no-such-helper-xyz"); err == nil || !strings.Contains(err.Error(), "install") {
		t.Errorf("missing helper error should say what to install: %v", err)
	}
}

func TestFuseAttrs(t *testing.T) {
	// As mount(2) on the host: nosuid and nodev only when asked for.
	if a := fuseAttrs(0); a != 0 {
		t.Errorf("fuseAttrs(0) = %#x, want 0 (relatime)", a)
	}
	a := fuseAttrs(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_RDONLY | unix.MS_NOSYMFOLLOW)
	want := uint64(unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSYMFOLLOW)
	if a != want {
		t.Errorf("attrs %#x, want %#x", a, want)
	}
}

func TestMountAttrs(t *testing.T) {
	a := mountAttrs(unix.MS_RDONLY | unix.MS_NOEXEC | unix.MS_NOATIME)
	want := uint64(unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOEXEC | unix.MOUNT_ATTR_NOATIME)
	if a != want {
		t.Errorf("attrs %#x, want %#x", a, want)
	}
	if mountAttrs(0)&(unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV) != unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV {
		t.Error("nosuid and nodev are always set")
	}
}

// TestLockedAttrs: a kernel mount is made (and locked) with nosuid, nodev
// and its atime flags only; ro, noexec and nosymfollow are set afterwards,
// unlocked.
func TestLockedAttrs(t *testing.T) {
	locked, set := lockedAttrs(unix.MS_RDONLY | unix.MS_NOEXEC | unix.MS_NOSYMFOLLOW | unix.MS_NOATIME | unix.MS_NODIRATIME)
	if want := uint64(unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOATIME | unix.MOUNT_ATTR_NODIRATIME); locked != want {
		t.Errorf("locked %#x, want %#x", locked, want)
	}
	if want := uint64(unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOEXEC | unix.MOUNT_ATTR_NOSYMFOLLOW); set != want {
		t.Errorf("set %#x, want %#x", set, want)
	}
	locked, set = lockedAttrs(0)
	if want := uint64(unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_RELATIME); locked != want || set != 0 {
		t.Errorf("no flags: locked %#x set %#x, want %#x and 0", locked, set, want)
	}
}

func extSuper(blocks uint64, logBlock uint32, bit64 bool) []byte {
	b := make([]byte, extSuperSize)
	le := binary.LittleEndian
	le.PutUint16(b[0x38:], extMagic)
	le.PutUint32(b[0x18:], logBlock)
	le.PutUint32(b[0x04:], uint32(blocks))
	if bit64 {
		le.PutUint32(b[0x60:], extIncompat64)
		le.PutUint32(b[0x150:], uint32(blocks>>32))
	}
	return b
}

func TestParseExtSuper(t *testing.T) {
	s, err := ParseExtSuper(extSuper(65536, 0, false))
	if err != nil || s.Blocks != 65536 || s.BlockBytes != 1024 {
		t.Fatalf("%+v %v", s, err)
	}
	s, err = ParseExtSuper(extSuper(1<<33, 2, true))
	if err != nil || s.Blocks != 1<<33 || s.BlockBytes != 4096 {
		t.Fatalf("64bit: %+v %v", s, err)
	}
	if _, err := ParseExtSuper(extSuper(1, 7, false)); err == nil {
		t.Error("block size 2^17 accepted")
	}
	if _, err := ParseExtSuper(make([]byte, extSuperSize)); err == nil {
		t.Error("no magic accepted")
	}
	if _, err := ParseExtSuper(make([]byte, 10)); err == nil {
		t.Error("short accepted")
	}
}

func TestParseMountinfo(t *testing.T) {
	text := "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n" +
		"73 22 0:43 / /tmp/a\\040b rw,nosuid - fuse.ext4 /dev/loop8 rw,user_id=0\n" +
		"74 73 0:44 / /tmp/a\\040b rw - fuse.fusefat /dev/loop9p1 rw\n" +
		"garbage\n"
	ms := parseMountinfo(text)
	if len(ms) != 3 || ms[1].point != "/tmp/a b" || ms[1].fstype != "fuse.ext4" || ms[2].id != 74 ||
		ms[1].dev != "0:43" || ms[1].root != "/" || ms[1].superOpts != "rw,user_id=0" || !sbReadOnly(mountEntry{superOpts: "ro,x"}) {
		t.Fatalf("%+v", ms)
	}
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add("22 1 254:0 / / rw - ext4 /dev/vda rw\n")
	f.Add("1 2 3 4 \\0 6 - \n")
	f.Fuzz(func(t *testing.T, s string) {
		_ = parseMountinfo(s)
	})
}

// Decoders of untrusted bytes: container memory (mount data) and images
// (superblocks) must never crash the supervisor.
func FuzzParseData(f *testing.F) {
	for _, s := range []string{"", "ro", "errors=panic,,noload", ",,,", "a=b=c", "\x00\xff,x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, o := range ParseData(s) {
			if o == "" || strings.Contains(o, ",") {
				t.Fatalf("bad option %q from %q", o, s)
			}
		}
		_, _ = fuseOptions("fuse2fs", 0, ParseData(s))
	})
}

func FuzzParseExtSuper(f *testing.F) {
	f.Add(extSuper(65536, 0, false))
	f.Add(extSuper(1<<40, 6, true))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseExtSuper(b)
		if err == nil && (s.BlockBytes < 1024 || s.BlockBytes > 65536 || s.Magic != extMagic) {
			t.Fatalf("accepted %+v", s)
		}
	})
}

func TestKernelOptions(t *testing.T) {
	cases := []struct {
		name   string
		fstype string
		data   string
		want   string // the options passed to the kernel
		bad    string // the option refused
	}{
		{"ext4 default errors", "ext4", "", "errors=remount-ro", ""},
		{"ext4 harmless", "ext4", "acl,commit=30,data=ordered,barrier=1,noload", "acl,commit=30,data=ordered,barrier=1,noload,errors=remount-ro", ""},
		{"ext4 errors chosen", "ext4", "errors=continue", "errors=continue", ""},
		{"ext3 shares ext4's list", "ext3", "ro,errors=remount-ro", "ro,errors=remount-ro", ""},
		{"ext2 generic only", "ext2", "sync,lazytime", "sync,lazytime,errors=remount-ro", ""},
		{"errors=panic", "ext4", "errors=panic", "", "errors=panic"},
		{"panic after a good one", "ext4", "errors=continue,errors=panic", "", "errors=panic"},
		{"journal_path", "ext4", "journal_path=/dev/sda", "", "journal_path=/dev/sda"},
		{"journal_dev", "ext4", "journal_dev=2049", "", "journal_dev=2049"},
		{"dax flag", "ext4", "dax", "", "dax"},
		{"dax value", "ext4", "dax=always", "", "dax=always"},
		{"resuid is a host id", "ext4", "resuid=0", "", "resuid=0"},
		{"journaled quota file", "ext4", "usrjquota=aquota.user", "", "usrjquota=aquota.user"},
		{"abort", "ext4", "abort", "", "abort"},
		{"warn_on_error", "ext4", "warn_on_error", "", "warn_on_error"},
		{"a value for a flag", "ext4", "acl=1", "", "acl=1"},
		{"no value for a name=", "ext4", "commit", "", "commit"},
		{"per-mount flag in data", "ext4", "noatime", "", "noatime"},
		{"source", "ext4", "source=/dev/sda", "", "source=/dev/sda"},
		{"case matters", "ext4", "ERRORS=panic", "", "ERRORS=panic"},
		{"squashfs", "squashfs", "errors=continue,threads=multi", "errors=continue,threads=multi", ""},
		{"squashfs panic", "squashfs", "errors=panic", "", "errors=panic"},
		{"erofs device", "erofs", "device=/dev/sda", "", "device=/dev/sda"},
		{"erofs fsid", "erofs", "fsid=x", "", "fsid=x"},
		{"erofs cache", "erofs", "cache_strategy=readaround,acl", "cache_strategy=readaround,acl", ""},
		{"xfs logdev", "xfs", "logdev=/dev/sda", "", "logdev=/dev/sda"},
		{"xfs rtdev", "xfs", "rtdev=/dev/sda", "", "rtdev=/dev/sda"},
		{"xfs harmless", "xfs", "nouuid,inode64,logbufs=8", "nouuid,inode64,logbufs=8", ""},
		{"btrfs device", "btrfs", "device=/dev/sda", "", "device=/dev/sda"},
		{"btrfs fatal_errors", "btrfs", "fatal_errors=panic", "", "fatal_errors=panic"},
		{"btrfs harmless", "btrfs", "compress=zstd:3,subvol=/a,space_cache=v2", "compress=zstd:3,subvol=/a,space_cache=v2", ""},
		{"vfat uid is a host id", "vfat", "uid=1000", "", "uid=1000"},
		{"vfat iocharset loads a module", "vfat", "iocharset=koi8-r", "", "iocharset=koi8-r"},
		{"vfat utf8", "vfat", "iocharset=utf8,shortname=mixed,errors=remount-ro", "iocharset=utf8,shortname=mixed,errors=remount-ro", ""},
		{"vfat panic", "vfat", "errors=panic", "", "errors=panic"},
		{"iso9660", "iso9660", "norock,session=1", "norock,session=1", ""},
		{"unknown type: generic only", "ntfs3", "ro,sync", "ro,sync", ""},
		{"unknown type: nothing else", "ntfs3", "windows_names", "", "windows_names"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := KernelOptions(c.fstype, ParseData(c.data))
			if c.bad != "" {
				var oe *OptionError
				if !errors.As(err, &oe) || oe.Option != c.bad || !errors.Is(err, unix.EINVAL) {
					t.Fatalf("%s %q: got %q, %v; want option %q refused with EINVAL", c.fstype, c.data, got, err, c.bad)
				}
				return
			}
			if err != nil || strings.Join(got, ",") != c.want {
				t.Fatalf("%s %q: got %q, %v; want %q", c.fstype, c.data, got, err, c.want)
			}
		})
	}
}
