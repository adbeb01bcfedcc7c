package linux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawBytes returns the in-memory bytes of *p, as the kernel's copy_from_user
// would see them on this (little-endian) host.
func rawBytes[T any](p *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), unsafe.Sizeof(*p))
}

// patterned returns n bytes where no two aligned fields look alike.
func patterned(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

func sampleInfo64() unix.LoopInfo64 {
	i := unix.LoopInfo64{
		Device:           0x0102030405060708,
		Inode:            0x1112131415161718,
		Rdevice:          0x2122232425262728,
		Offset:           0x3132333435363738,
		Sizelimit:        0x4142434445464748,
		Number:           0x51525354,
		Encrypt_type:     0x61626364,
		Encrypt_key_size: 0x71727374,
		Flags:            0x81828384,
		Init:             [2]uint64{0x9192939495969798, 0xa1a2a3a4a5a6a7a8},
	}
	copy(i.File_name[:], "/var/lib/images/disk.img")
	for k := range i.Crypt_name {
		i.Crypt_name[k] = 0xc0 | byte(k)
	}
	for k := range i.Encrypt_key {
		i.Encrypt_key[k] = 0xe0 | byte(k)
	}
	return i
}

// checkInfo compares a decoded LoopInfo64 with the kernel struct it came from.
func checkInfo(t *testing.T, got LoopInfo64, want *unix.LoopInfo64) {
	t.Helper()
	if got.Device != want.Device || got.Inode != want.Inode || got.Rdevice != want.Rdevice ||
		got.Offset != want.Offset || got.SizeLimit != want.Sizelimit {
		t.Errorf("u64 fields: got dev %#x ino %#x rdev %#x off %#x limit %#x, want %#x %#x %#x %#x %#x",
			got.Device, got.Inode, got.Rdevice, got.Offset, got.SizeLimit,
			want.Device, want.Inode, want.Rdevice, want.Offset, want.Sizelimit)
	}
	if got.Number != want.Number || got.EncryptType != want.Encrypt_type ||
		got.EncryptKeySize != want.Encrypt_key_size || got.Flags != want.Flags {
		t.Errorf("u32 fields: got number %#x type %#x keysize %#x flags %#x, want %#x %#x %#x %#x",
			got.Number, got.EncryptType, got.EncryptKeySize, got.Flags,
			want.Number, want.Encrypt_type, want.Encrypt_key_size, want.Flags)
	}
	if got.FileName != want.File_name {
		t.Errorf("file name: got %q, want %q", got.FileName[:], want.File_name[:])
	}
}

func TestStructSizes(t *testing.T) {
	if SizeofLoopInfo64 != 232 {
		t.Errorf("SizeofLoopInfo64 = %d, want 232", SizeofLoopInfo64)
	}
	if SizeofLoopConfig != 304 {
		t.Errorf("SizeofLoopConfig = %d, want 304", SizeofLoopConfig)
	}
	if runtime.GOARCH == "amd64" && SizeofLoopInfo != 168 {
		// struct loop_info on x86_64: int (+4 padding), 3 unsigned long,
		// 4 int, char[64], unsigned char[32], unsigned long[2], char[4]
		// (+4 padding).
		t.Errorf("SizeofLoopInfo = %d, want 168 on amd64", SizeofLoopInfo)
	}
	// The offsets the decoders hard-code, against the x/sys layout.
	var i unix.LoopInfo64
	var c unix.LoopConfig
	offs := []struct {
		name      string
		got, want uintptr
	}{
		{"Device", unsafe.Offsetof(i.Device), 0},
		{"Inode", unsafe.Offsetof(i.Inode), 8},
		{"Rdevice", unsafe.Offsetof(i.Rdevice), 16},
		{"Offset", unsafe.Offsetof(i.Offset), 24},
		{"Sizelimit", unsafe.Offsetof(i.Sizelimit), 32},
		{"Number", unsafe.Offsetof(i.Number), 40},
		{"Encrypt_type", unsafe.Offsetof(i.Encrypt_type), 44},
		{"Encrypt_key_size", unsafe.Offsetof(i.Encrypt_key_size), 48},
		{"Flags", unsafe.Offsetof(i.Flags), 52},
		{"File_name", unsafe.Offsetof(i.File_name), 56},
		{"Crypt_name", unsafe.Offsetof(i.Crypt_name), 120},
		{"Encrypt_key", unsafe.Offsetof(i.Encrypt_key), 184},
		{"Init", unsafe.Offsetof(i.Init), 216},
		{"config.Fd", unsafe.Offsetof(c.Fd), 0},
		{"config.Size", unsafe.Offsetof(c.Size), 4},
		{"config.Info", unsafe.Offsetof(c.Info), 8},
	}
	for _, o := range offs {
		if o.got != o.want {
			t.Errorf("offset of %s = %d, want %d", o.name, o.got, o.want)
		}
	}
}

func TestDecodeLoopInfo64Layout(t *testing.T) {
	want := sampleInfo64()
	b := rawBytes(&want)
	if len(b) != SizeofLoopInfo64 {
		t.Fatalf("raw struct has %d bytes, want %d", len(b), SizeofLoopInfo64)
	}
	// encoding/binary must agree with the in-memory image (no padding, LE).
	var enc bytes.Buffer
	if err := binary.Write(&enc, binary.LittleEndian, &want); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc.Bytes(), b) {
		t.Fatalf("binary.Write and the in-memory struct disagree")
	}
	got, err := DecodeLoopInfo64(b)
	if err != nil {
		t.Fatal(err)
	}
	checkInfo(t, got, &want)

	// Longer input (a struct followed by garbage) decodes the same.
	long := append(append([]byte{}, b...), bytes.Repeat([]byte{0xff}, 100)...)
	got2, err := DecodeLoopInfo64(long)
	if err != nil || got2 != got {
		t.Errorf("decoding with trailing bytes: %+v, %v", got2, err)
	}
	// The input is not retained or modified.
	before := append([]byte{}, b...)
	got.FileName[0] = 'X'
	if !bytes.Equal(before, b) {
		t.Errorf("decoder aliases its input")
	}
}

func TestDecodeLoopConfigLayout(t *testing.T) {
	want := unix.LoopConfig{Fd: 0xdeadbeef, Size: 4096, Info: sampleInfo64()}
	b := rawBytes(&want)
	if len(b) != SizeofLoopConfig {
		t.Fatalf("raw struct has %d bytes, want %d", len(b), SizeofLoopConfig)
	}
	got, err := DecodeLoopConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.FD != want.Fd || got.BlockSize != want.Size {
		t.Errorf("fd/block size = %#x/%d, want %#x/%d", got.FD, got.BlockSize, want.Fd, want.Size)
	}
	checkInfo(t, got.Info, &want.Info)

	// Patterned bytes: every field is read at its own offset.
	p := patterned(SizeofLoopConfig)
	var k unix.LoopConfig
	copy(rawBytes(&k), p)
	got, err = DecodeLoopConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.FD != k.Fd || got.BlockSize != k.Size {
		t.Errorf("patterned fd/block size = %#x/%#x, want %#x/%#x", got.FD, got.BlockSize, k.Fd, k.Size)
	}
	checkInfo(t, got.Info, &k.Info)
}

func TestDecodeShort(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 120, SizeofLoopInfo64 - 1} {
		if _, err := DecodeLoopInfo64(make([]byte, n)); !errors.Is(err, ErrShort) {
			t.Errorf("DecodeLoopInfo64(%d bytes) error = %v, want ErrShort", n, err)
		}
	}
	if _, err := DecodeLoopInfo64(nil); !errors.Is(err, ErrShort) {
		t.Errorf("DecodeLoopInfo64(nil) error = %v, want ErrShort", err)
	}
	for _, n := range []int{0, 4, 8, SizeofLoopInfo64, SizeofLoopInfo64 + 8 - 1, SizeofLoopInfo64 + 8, SizeofLoopConfig - 1} {
		if _, err := DecodeLoopConfig(make([]byte, n)); !errors.Is(err, ErrShort) {
			t.Errorf("DecodeLoopConfig(%d bytes) error = %v, want ErrShort", n, err)
		}
		b := patterned(n)
		orig := append([]byte{}, b...)
		if err := SetConfigFD(b, 42); !errors.Is(err, ErrShort) {
			t.Errorf("SetConfigFD(%d bytes) error = %v, want ErrShort", n, err)
		}
		if !bytes.Equal(b, orig) {
			t.Errorf("SetConfigFD(%d bytes) modified a short buffer", n)
		}
	}
	if _, err := DecodeLoopConfig(nil); !errors.Is(err, ErrShort) {
		t.Errorf("DecodeLoopConfig(nil) error = %v, want ErrShort", err)
	}
	if err := SetConfigFD(nil, 1); !errors.Is(err, ErrShort) {
		t.Errorf("SetConfigFD(nil) error = %v, want ErrShort", err)
	}
}

func TestSetConfigFD(t *testing.T) {
	for _, fd := range []uint32{0, 3, 0x7fffffff, 0xffffffff, 0x01020304} {
		b := patterned(SizeofLoopConfig + 16)
		orig := append([]byte{}, b...)
		before, err := DecodeLoopConfig(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := SetConfigFD(b, fd); err != nil {
			t.Fatalf("SetConfigFD(%d): %v", fd, err)
		}
		after, err := DecodeLoopConfig(b)
		if err != nil {
			t.Fatal(err)
		}
		if after.FD != fd {
			t.Errorf("fd after SetConfigFD(%#x) = %#x", fd, after.FD)
		}
		if after.BlockSize != before.BlockSize || after.Info != before.Info {
			t.Errorf("SetConfigFD(%#x) changed decoded fields other than fd", fd)
		}
		if !bytes.Equal(b[4:], orig[4:]) {
			t.Errorf("SetConfigFD(%#x) changed bytes beyond 0..3", fd)
		}
		if got := binary.LittleEndian.Uint32(b); got != fd {
			t.Errorf("bytes 0..3 = %#x, want %#x", got, fd)
		}
		// The kernel's view of the rewritten buffer.
		var k unix.LoopConfig
		copy(rawBytes(&k), b)
		if k.Fd != fd {
			t.Errorf("kernel sees fd %#x, want %#x", k.Fd, fd)
		}
	}
}

func TestCString(t *testing.T) {
	tests := []struct {
		in   []byte
		want string
	}{
		{nil, ""},
		{[]byte{}, ""},
		{[]byte{0}, ""},
		{[]byte("abc"), "abc"},
		{[]byte("abc\x00def"), "abc"},
		{[]byte("\x00abc"), ""},
		{[]byte("/tmp/x.img\x00\x00\x00"), "/tmp/x.img"},
		{[]byte("\xff\xfe\x00"), "\xff\xfe"},
	}
	for _, tt := range tests {
		if got := CString(tt.in); got != tt.want {
			t.Errorf("CString(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	var fn [64]byte
	for i := range fn {
		fn[i] = 'a'
	}
	if got := CString(fn[:]); len(got) != 64 {
		t.Errorf("CString of an unterminated 64-byte name has length %d, want 64", len(got))
	}
}

func addDecoderSeeds(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add(make([]byte, 7))
	f.Add(make([]byte, SizeofLoopInfo64-1))
	f.Add(make([]byte, SizeofLoopInfo64))
	f.Add(make([]byte, SizeofLoopConfig-1))
	f.Add(make([]byte, SizeofLoopConfig))
	f.Add(patterned(SizeofLoopConfig + 3))
	c := unix.LoopConfig{Fd: 3, Size: 512, Info: sampleInfo64()}
	f.Add(append([]byte{}, rawBytes(&c)...))
	i := sampleInfo64()
	f.Add(append([]byte{}, rawBytes(&i)...))
}

func FuzzDecodeLoopConfig(f *testing.F) {
	addDecoderSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := append([]byte{}, b...)
		c, err := DecodeLoopConfig(b)
		if !bytes.Equal(b, orig) {
			t.Fatal("DecodeLoopConfig modified its input")
		}
		if len(b) < SizeofLoopConfig {
			if !errors.Is(err, ErrShort) {
				t.Fatalf("len %d: error %v, want ErrShort", len(b), err)
			}
			if c != (LoopConfig{}) {
				t.Fatalf("len %d: non-zero result with ErrShort", len(b))
			}
			if err := SetConfigFD(b, 7); !errors.Is(err, ErrShort) || !bytes.Equal(b, orig) {
				t.Fatalf("len %d: SetConfigFD on short input: %v", len(b), err)
			}
			return
		}
		if err != nil {
			t.Fatalf("len %d: %v", len(b), err)
		}
		var k unix.LoopConfig
		copy(rawBytes(&k), b)
		if c.FD != k.Fd || c.BlockSize != k.Size {
			t.Fatalf("fd/size %#x/%#x, kernel sees %#x/%#x", c.FD, c.BlockSize, k.Fd, k.Size)
		}
		checkInfo(t, c.Info, &k.Info)
		fd := c.FD ^ 0xa5a5a5a5
		if err := SetConfigFD(b, fd); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b[4:], orig[4:]) {
			t.Fatal("SetConfigFD changed bytes beyond 0..3")
		}
		c2, err := DecodeLoopConfig(b)
		if err != nil || c2.FD != fd || c2.BlockSize != c.BlockSize || c2.Info != c.Info {
			t.Fatalf("after SetConfigFD: %+v, %v", c2, err)
		}
	})
}

func FuzzDecodeLoopInfo64(f *testing.F) {
	addDecoderSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := append([]byte{}, b...)
		i, err := DecodeLoopInfo64(b)
		if !bytes.Equal(b, orig) {
			t.Fatal("DecodeLoopInfo64 modified its input")
		}
		if len(b) < SizeofLoopInfo64 {
			if !errors.Is(err, ErrShort) {
				t.Fatalf("len %d: error %v, want ErrShort", len(b), err)
			}
			if i != (LoopInfo64{}) {
				t.Fatalf("len %d: non-zero result with ErrShort", len(b))
			}
			return
		}
		if err != nil {
			t.Fatalf("len %d: %v", len(b), err)
		}
		var k unix.LoopInfo64
		copy(rawBytes(&k), b)
		checkInfo(t, i, &k)
		name := CString(i.FileName[:])
		if len(name) > len(i.FileName) || bytes.IndexByte([]byte(name), 0) >= 0 {
			t.Fatalf("CString(file name) = %q", name)
		}
	})
}
