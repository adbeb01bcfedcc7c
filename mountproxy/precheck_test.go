package mountproxy

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCheckExtFeatures: the kernel's answers for a mount of an ext image
// as ext2, ext3 and ext4, read-write and read-only, as measured on this
// project's 6.18 kernel (ext2 served by the ext4 driver, CONFIG_QFMT_V2
// off): mkfs.ext2/3/4 with the features named.
func TestCheckExtFeatures(t *testing.T) {
	const (
		ext2     = extIncompatFiletype
		ext2RO   = extROSparseSuper | extROLargeFile
		ext4Inc  = extIncompatFiletype | extIncompatExtents | extIncompat64 | extIncompatFlexBG
		ext4ROc  = ext2RO | extROHugeFile | extRODirNlink | extROExtraIsize | extROMetadataCsum
		noQuota  = false
		hasQuota = true
	)
	cases := []struct {
		name                  string
		compat, incompat, roc uint32
		quota                 bool
		// want: "ok" or "EINVAL" for ext2 rw, ext2 ro, ext3 rw, ext3 ro, ext4 rw, ext4 ro
		want [6]string
	}{
		{"ext2", 0, ext2, ext2RO, noQuota, [6]string{"ok", "ok", "EINVAL", "EINVAL", "ok", "ok"}},
		{"ext3", extCompatJournal, ext2, ext2RO, noQuota, [6]string{"ok", "ok", "ok", "ok", "ok", "ok"}},
		{"ext4", extCompatJournal, ext4Inc, ext4ROc, noQuota, [6]string{"EINVAL", "EINVAL", "EINVAL", "EINVAL", "ok", "ok"}},
		{"ext4 without journal", 0, ext4Inc, ext4ROc, noQuota, [6]string{"EINVAL", "EINVAL", "EINVAL", "EINVAL", "ok", "ok"}},
		{"ext2 with dir_nlink", 0, ext2, ext2RO | extRODirNlink, noQuota, [6]string{"EINVAL", "ok", "EINVAL", "EINVAL", "ok", "ok"}},
		{"ext3 with metadata_csum", extCompatJournal, ext2, ext2RO | extROMetadataCsum, noQuota, [6]string{"EINVAL", "ok", "EINVAL", "ok", "ok", "ok"}},
		{"ext2 with extents", 0, ext2 | extIncompatExtents, ext2RO, noQuota, [6]string{"EINVAL", "EINVAL", "EINVAL", "EINVAL", "ok", "ok"}},
		{"ext2 needing recovery", 0, ext2 | extIncompatRecover, ext2RO, noQuota, [6]string{"EINVAL", "EINVAL", "EINVAL", "EINVAL", "ok", "ok"}},
		{"ext4 with quota, no QFMT_V2", extCompatJournal, ext4Inc, ext4ROc | extROQuota, noQuota, [6]string{"EINVAL", "EINVAL", "EINVAL", "EINVAL", "EINVAL", "ok"}},
		{"ext4 with quota", extCompatJournal, ext4Inc, ext4ROc | extROQuota, hasQuota, [6]string{"EINVAL", "EINVAL", "EINVAL", "EINVAL", "ok", "ok"}},
		{"unknown incompat", 0, ext2 | 0x80000000, ext2RO, hasQuota, [6]string{"EINVAL", "EINVAL", "EINVAL", "EINVAL", "EINVAL", "EINVAL"}},
		{"unknown ro_compat", 0, ext2, ext2RO | 0x80000000, hasQuota, [6]string{"EINVAL", "ok", "EINVAL", "EINVAL", "EINVAL", "ok"}},
		{"bigalloc without extents", 0, ext2, ext2RO | extROBigalloc, hasQuota, [6]string{"EINVAL", "ok", "EINVAL", "EINVAL", "EINVAL", "ok"}},
		{"casefold without unicode", 0, ext4Inc | extIncompatCasefold, ext4ROc, hasQuota, [6]string{"EINVAL", "EINVAL", "EINVAL", "EINVAL", "EINVAL", "EINVAL"}},
	}
	for _, c := range cases {
		s := ExtSuper{Compat: c.compat, Incompat: c.incompat, ROCompat: c.roc}
		i := 0
		for _, typ := range []string{"ext2", "ext3", "ext4"} {
			for _, ro := range []bool{false, true} {
				_, err := CheckExtFeatures(s, typ, ro, ExtKernel{Quota: c.quota})
				got := "ok"
				if err != nil {
					got = "err"
					if errors.Is(err, unix.EINVAL) {
						got = "EINVAL"
					}
				}
				if got != c.want[i] {
					t.Errorf("%s as %s (ro %v): %s (%v), want %s", c.name, typ, ro, got, err, c.want[i])
				}
				i++
			}
		}
	}
	s := ExtSuper{Incompat: extIncompatFiletype, ROCompat: extROReadonly}
	if ro, err := CheckExtFeatures(s, "ext4", false, ExtKernel{}); err != nil || !ro {
		t.Errorf("read-only feature: forceRO %v, %v; want a read-only mount", ro, err)
	}
}

func squashSuper(magic uint32, major uint16, bs uint32, blog uint16) []byte {
	b := make([]byte, 96)
	le := binary.LittleEndian
	le.PutUint32(b[0:], magic)
	le.PutUint32(b[12:], bs)
	le.PutUint16(b[22:], blog)
	le.PutUint16(b[28:], major)
	return b
}

func TestCheckSquashfsSuper(t *testing.T) {
	if err := CheckSquashfsSuper(squashSuper(squashfsMagic, 4, 131072, 17)); err != nil {
		t.Error(err)
	}
	for name, b := range map[string][]byte{
		"magic":      squashSuper(0x1234, 4, 131072, 17),
		"version 3":  squashSuper(squashfsMagic, 3, 131072, 17),
		"block size": squashSuper(squashfsMagic, 4, 4000, 12),
		"zeroed":     make([]byte, 96),
	} {
		if err := CheckSquashfsSuper(b); !errors.Is(err, unix.EINVAL) {
			t.Errorf("%s: %v, want EINVAL", name, err)
		}
	}
	if err := CheckSquashfsSuper(nil); !errors.Is(err, unix.EIO) {
		t.Errorf("short: %v, want EIO", err)
	}
}

func fatBoot(sector uint16, perClus byte, reserved uint16, fats, media byte) []byte {
	b := make([]byte, 512)
	le := binary.LittleEndian
	le.PutUint16(b[0x0B:], sector)
	b[0x0D] = perClus
	le.PutUint16(b[0x0E:], reserved)
	b[0x10] = fats
	b[0x15] = media
	return b
}

func TestCheckFatBoot(t *testing.T) {
	if err := CheckFatBoot(fatBoot(512, 4, 1, 2, 0xf8)); err != nil {
		t.Error(err)
	}
	for name, b := range map[string][]byte{
		"media":       fatBoot(512, 4, 1, 2, 0x12),
		"sector 1000": fatBoot(1000, 4, 1, 2, 0xf8),
		"cluster 3":   fatBoot(512, 3, 1, 2, 0xf8),
		"reserved 0":  fatBoot(512, 4, 0, 2, 0xf8),
		"no FAT":      fatBoot(512, 4, 1, 0, 0xf8),
		"zeroed":      make([]byte, 512),
	} {
		if err := CheckFatBoot(b); !errors.Is(err, unix.EINVAL) {
			t.Errorf("%s: %v, want EINVAL", name, err)
		}
	}
}

func FuzzImageChecks(f *testing.F) {
	f.Add(squashSuper(squashfsMagic, 4, 131072, 17))
	f.Add(fatBoot(512, 4, 1, 2, 0xf8))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = CheckSquashfsSuper(b)
		_ = CheckFatBoot(b)
		if s, err := ParseExtSuper(b); err == nil {
			for _, typ := range []string{"ext2", "ext3", "ext4"} {
				_, _ = CheckExtFeatures(s, typ, false, ExtKernel{})
			}
		}
	})
}

// An ext4 superblock with a journal device instead of a journal inode is
// refused for a kernel mount; an internal journal and no journal pass.
func TestCheckExtJournal(t *testing.T) {
	sb := func(compat, inum, dev uint32) []byte {
		b := make([]byte, extSuperSize)
		binary.LittleEndian.PutUint16(b[0x38:], extMagic)
		binary.LittleEndian.PutUint32(b[0x5C:], compat)
		binary.LittleEndian.PutUint32(b[0xE0:], inum)
		binary.LittleEndian.PutUint32(b[0xE4:], dev)
		return b
	}
	for _, tc := range []struct {
		name    string
		b       []byte
		refused bool
	}{
		{"internal journal", sb(extCompatJournal, 8, 0), false},
		{"no journal", sb(0, 0, 0x7fa), false},
		{"external journal 7:250", sb(extCompatJournal, 0, 0x7fa), true},
		{"journal inode 0, no device", sb(extCompatJournal, 0, 0), true},
		{"not ext", make([]byte, extSuperSize), false},
		{"short", []byte{1, 2}, false},
	} {
		err := CheckExtJournal(tc.b)
		if tc.refused != (err != nil) || (err != nil && !errors.Is(err, unix.EINVAL)) {
			t.Errorf("%s: got %v, want refused=%v with EINVAL", tc.name, err, tc.refused)
		}
	}
}
