package supervisor

import (
	"io"
	"runtime"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/notify"
)

const x32Bit = 0x40000000

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// Requests handle answers without reaching the caller: a nil listener and
// instance prove it does not try.
func TestHandleWithoutCaller(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("x86 numbers")
	}
	enosys := notify.Errno(unix.ENOSYS)
	einval := notify.Errno(unix.EINVAL)
	cont := notify.Reply{Continue: true}
	tests := []struct {
		name string
		req  notify.Request
		want notify.Reply
	}{
		{"read", notify.Request{Arch: notify.AuditArchX86_64, Nr: unix.SYS_READ, Args: [6]uint64{0, 0x4C00}}, enosys},
		{"x32 bit with native ioctl nr", notify.Request{Arch: notify.AuditArchX86_64, Nr: x32Bit | 16, Args: [6]uint64{0, 0x4C00}}, enosys},
		{"i386 with native nr 16", notify.Request{Arch: notify.AuditArchI386, Nr: 16, Args: [6]uint64{0, 0x4C00}}, enosys},
		{"x86_64 with i386 nr 54", notify.Request{Arch: notify.AuditArchX86_64, Nr: 54, Args: [6]uint64{0, 0x4C00}}, enosys},
		{"i386 umount (22) without proxy", notify.Request{Arch: notify.AuditArchI386, Nr: 22}, cont},
		{"unknown arch", notify.Request{Arch: 0xc00000b7, Nr: 29, Args: [6]uint64{0, 0x4C00}}, enosys},
		{"i386 LOOP_SET_STATUS", notify.Request{Arch: notify.AuditArchI386, Nr: 54, Args: [6]uint64{3, 0x4C02, 0x1000}}, einval},
		{"i386 LOOP_GET_STATUS", notify.Request{Arch: notify.AuditArchI386, Nr: 54, Args: [6]uint64{3, 0x4C03, 0x1000}}, einval},
		{"x32 LOOP_SET_STATUS", notify.Request{Arch: notify.AuditArchX86_64, Nr: x32Bit | 514, Args: [6]uint64{3, 0x4C02, 0x1000}}, einval},
		{"x32 LOOP_GET_STATUS high cmd bits", notify.Request{Arch: notify.AuditArchX86_64, Nr: x32Bit | 514, Args: [6]uint64{3, 0xffffffff00004C03, 0x1000}}, einval},
		// Without a mount proxy, mount calls are the kernel's to decide.
		{"mount without proxy", notify.Request{Arch: notify.AuditArchX86_64, Nr: 165, Args: [6]uint64{1, 2, 3, 0}}, cont},
		{"umount2 without proxy", notify.Request{Arch: notify.AuditArchX86_64, Nr: 166, Args: [6]uint64{1}}, cont},
		{"fsopen without proxy", notify.Request{Arch: notify.AuditArchX86_64, Nr: 430, Args: [6]uint64{1}}, cont},
		{"i386 mount without proxy", notify.Request{Arch: notify.AuditArchI386, Nr: 21}, cont},
		{"x32 umount2 without proxy", notify.Request{Arch: notify.AuditArchX86_64, Nr: x32Bit | 166}, cont},
	}
	for _, tt := range tests {
		req := tt.req
		sb := &Sandbox{Log: quietLog()}
		if req.Nr&x32Bit != 0 && !notify.KernelHasX32() {
			// The kernel's answer to any x32 call: it has no x32 ABI.
			tt.want = enosys
		}
		if got := handle(nil, sb, &req); got != tt.want {
			t.Errorf("%s: handle = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
