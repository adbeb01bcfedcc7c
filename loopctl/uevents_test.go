package loopctl

import (
	"testing"

	"github.com/loopvisor/loopvisor/internal/linux"
)

func TestParseLoopUevent(t *testing.T) {
	for msg, want := range map[string]int{
		"change@/devices/virtual/block/loop8\x00ACTION=change\x00": 8,
		"change@/devices/virtual/block/loop12":                     12,
		"add@/devices/virtual/block/loop8\x00":                     -1,
		"change@/devices/virtual/block/loop8/loop8p1\x00":          -1,
		"change@/devices/virtual/block/vda\x00":                    -1,
		"libudev\x00garbage":                                       -1,
	} {
		got, ok := ParseLoopUevent([]byte(msg))
		if (want >= 0) != ok || (ok && got != want) {
			t.Errorf("%q: %d %v, want %d", msg, got, ok, want)
		}
	}
}

func FuzzParseLoopUevent(f *testing.F) {
	f.Add([]byte("change@/devices/virtual/block/loop8\x00ACTION=change\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if idx, ok := ParseLoopUevent(b); ok && (idx < 0 || idx > linux.MaxLoopMinor) {
			t.Fatalf("index %d", idx)
		}
	})
}
