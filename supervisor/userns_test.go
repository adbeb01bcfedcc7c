package supervisor

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/loopvisor/loopvisor/mountproxy"
)

func TestParseIDMapText(t *testing.T) {
	for _, tc := range []struct {
		name string
		text string
		want []idRange
		bad  bool
	}{
		{"rootless podman", "         0       1001          1\n         1     165536      65536\n", []idRange{{1001, 1}, {165536, 65536}}, false},
		{"empty", "", nil, false},
		{"two fields", "0 1001\n", nil, true},
		{"not a number", "0 x 1\n", nil, true},
		{"beyond 32 bits", "0 4294967296 1\n", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseIDMap(tc.text)
			if (err != nil) != tc.bad {
				t.Fatalf("err = %v, want error %v", err, tc.bad)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestWithin(t *testing.T) {
	user := []idRange{{1001, 1}, {165536, 65536}, {0, 1}}
	for _, tc := range []struct {
		name string
		m    []idRange
		ok   bool
	}{
		{"own uid and the whole sub range", []idRange{{1001, 1}, {165536, 65536}}, true},
		{"part of the sub range", []idRange{{165540, 10}}, true},
		{"one past the sub range", []idRange{{165536, 65537}}, false},
		{"starts before the sub range", []idRange{{165535, 2}}, false},
		{"another user's uid", []idRange{{1002, 1}}, false},
		{"host root, even if a file lists it", []idRange{{0, 1}}, false},
		{"count that would wrap", []idRange{{165536, 1<<32 - 1}}, false},
		{"across two allowed ranges", []idRange{{1001, 164536}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, ok := within(tc.m, user); ok != tc.ok {
				t.Errorf("within(%v) = %v, want %v", tc.m, ok, tc.ok)
			}
		})
	}
}

func TestSubIDRanges(t *testing.T) {
	f := filepath.Join(t.TempDir(), "subuid")
	text := "root:100000:65536\nalice:165536:65536\n1001:300000:10\nalice:bad:1\nalice:400000:0\nbob:231072:65536\nalice:4294967295:2\n"
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	got := subIDRanges(f, "alice", 1001)
	want := []idRange{{165536, 65536}, {300000, 10}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("subIDRanges = %v, want %v", got, want)
	}
	if got := subIDRanges(filepath.Join(t.TempDir(), "missing"), "alice", 1001); got != nil {
		t.Errorf("missing file: %v", got)
	}
}

func TestUserGate(t *testing.T) {
	var g userGate
	for i := 0; i < maxUserConns; i++ {
		if !g.enter(1001) {
			t.Fatalf("connection %d of %d refused", i+1, maxUserConns)
		}
	}
	if g.enter(1001) {
		t.Fatal("one connection too many let in")
	}
	if !g.enter(1002) {
		t.Fatal("another user is limited by the first one's connections")
	}
	g.leave(1001)
	if !g.enter(1001) {
		t.Fatal("a connection that ended still counts")
	}
}

func TestFuseOnly(t *testing.T) {
	p := mountproxy.DefaultPolicy()
	check := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	check(p.AllowKernel("ext4,xfs"))
	check(p.AddFuse("squashfs=mysquash"))
	check(p.Resolve(map[string]bool{"squashfs": true}))
	fuseOnly(&p)
	if len(p.Kernel) != 0 {
		t.Errorf("kernel types left: %v", p.Kernel)
	}
	for typ, want := range map[string]string{"ext4": "fuse2fs", "squashfs": "mysquash", "ext2": "fuse2fs"} {
		if p.Fuse[typ] != want {
			t.Errorf("%s is served by %q, want %q", typ, p.Fuse[typ], want)
		}
	}
	if p.Serves("xfs") {
		t.Error("xfs, which has no FUSE helper, is still served")
	}
}
