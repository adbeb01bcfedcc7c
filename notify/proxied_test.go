package notify

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestStructSizesMatchKernel(t *testing.T) {
	if got := unsafe.Sizeof(seccompNotif{}); got != NotifSize {
		t.Errorf("seccompNotif is %d bytes, NotifSize %d", got, NotifSize)
	}
	if got := unsafe.Sizeof(seccompNotifResp{}); got != NotifRespSize {
		t.Errorf("seccompNotifResp is %d bytes, NotifRespSize %d", got, NotifRespSize)
	}
	if got := unsafe.Sizeof(seccompData{}); got != DataSize {
		t.Errorf("seccompData is %d bytes, DataSize %d", got, DataSize)
	}
	n, r, d, err := KernelSizes()
	if err != nil {
		t.Fatal(err)
	}
	// The kernel's structs may only grow at the end.
	if n < NotifSize || r < NotifRespSize || d < DataSize {
		t.Errorf("kernel sizes notif %d resp %d data %d are below this build's", n, r, d)
	}
}

func TestUnmarshalNotifRoundTrip(t *testing.T) {
	n := seccompNotif{ID: 0x1122334455667788, Pid: 4242, Flags: 7,
		Data: seccompData{Nr: 16, Arch: AuditArchX86_64, InstructionPointer: 99, Args: [6]uint64{3, 0x4c82, 5, 6, 7, 8}}}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&n)), unsafe.Sizeof(n))
	r, err := UnmarshalNotif(append(append([]byte(nil), raw...), 0xff, 0xff)) // a longer, newer struct
	if err != nil {
		t.Fatal(err)
	}
	want := Request{ID: n.ID, Pid: 4242, Nr: 16, Arch: AuditArchX86_64, Args: n.Data.Args}
	if r != want {
		t.Errorf("got %+v, want %+v", r, want)
	}
	for _, bad := range [][]byte{raw[:NotifSize-1], nil} {
		if _, err := UnmarshalNotif(bad); err == nil {
			t.Errorf("%d bytes decoded", len(bad))
		}
	}
	zeroPid := append([]byte(nil), raw...)
	binary.LittleEndian.PutUint32(zeroPid[8:], 0)
	if _, err := UnmarshalNotif(zeroPid); err == nil {
		t.Error("pid 0 decoded")
	}
}

func TestMarshalRespMatchesRespond(t *testing.T) {
	for _, c := range []struct {
		name string
		r    Reply
	}{{"errno", Errno(unix.ENXIO)}, {"value", Value(7)}, {"continue", Continue}} {
		resp := respFor(42, c.r)
		raw := unsafe.Slice((*byte)(unsafe.Pointer(&resp)), unsafe.Sizeof(resp))
		got := MarshalResp(42, c.r, NotifRespSize+8)
		if !bytes.Equal(got[:NotifRespSize], raw) || !bytes.Equal(got[NotifRespSize:], make([]byte, 8)) {
			t.Errorf("%s: % x, want % x + zeros", c.name, got, raw)
		}
	}
}

// An observed listener never receives or answers.
func TestObserveDoesNotDrive(t *testing.T) {
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Observe(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	if _, err := l.Next(); !errors.Is(err, ErrObserver) {
		t.Errorf("Next: %v", err)
	}
	if err := l.Respond(1, Continue); !errors.Is(err, ErrObserver) {
		t.Errorf("Respond: %v", err)
	}
	if l.Valid(1) {
		t.Error("ID 1 valid on /dev/null")
	}
}

func FuzzUnmarshalNotif(f *testing.F) {
	f.Add(make([]byte, NotifSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := UnmarshalNotif(b)
		if err == nil && (len(b) < NotifSize || r.Pid <= 0) {
			t.Fatalf("accepted %d bytes, pid %d", len(b), r.Pid)
		}
	})
}
