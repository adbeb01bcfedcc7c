package supervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCapSysAdminBit(t *testing.T) {
	if capSysAdmin != unix.CAP_SYS_ADMIN {
		t.Errorf("capSysAdmin = %d, want %d", capSysAdmin, unix.CAP_SYS_ADMIN)
	}
}

func TestHasCapFixtures(t *testing.T) {
	tests := []struct {
		file     string
		eff, prm bool
	}{
		{"status-root", true, true},
		{"status-nosysadmin", false, true},
		{"status-prm-only", false, true},
		{"status-sysadmin-only", true, true},
		{"status-user", false, false},
	}
	for _, tt := range tests {
		b, err := os.ReadFile(filepath.Join("testdata", tt.file))
		if err != nil {
			t.Fatal(err)
		}
		if got := hasCap(b, "CapEff:", capSysAdmin); got != tt.eff {
			t.Errorf("%s: CapEff has CAP_SYS_ADMIN = %v, want %v", tt.file, got, tt.eff)
		}
		if got := hasCap(b, "CapPrm:", capSysAdmin); got != tt.prm {
			t.Errorf("%s: CapPrm has CAP_SYS_ADMIN = %v, want %v", tt.file, got, tt.prm)
		}
		// CAP_SYS_RESOURCE (24) is set in every fixture that has full caps.
		if got, want := hasCap(b, "CapEff:", 24), tt.file == "status-root" || tt.file == "status-nosysadmin"; got != want {
			t.Errorf("%s: CapEff bit 24 = %v, want %v", tt.file, got, want)
		}
		// CapBnd is full everywhere.
		if !hasCap(b, "CapBnd:", capSysAdmin) {
			t.Errorf("%s: CapBnd lacks CAP_SYS_ADMIN", tt.file)
		}
	}
}

func TestHasCap(t *testing.T) {
	tests := []struct {
		name, status string
		want         bool
	}{
		{"bit 21 alone", "CapEff:\t0000000000200000\n", true},
		{"full set", "CapEff:\t000001ffffffffff\n", true},
		{"all but 21", "CapEff:\t000001ffffdfffff\n", false},
		{"zero", "CapEff:\t0000000000000000\n", false},
		{"short hex", "CapEff:\t200000\n", true},
		{"upper-case hex", "CapEff:\t000001FFFFFFFFFF\n", true},
		{"spaces not tab", "CapEff:   0000000000200000   \n", true},
		{"no newline at end", "Name:\tx\nCapEff:\t0000000000200000", true},
		{"CRLF", "CapEff:\t0000000000200000\r\n", true},
		{"all 64 bits", "CapEff:\tffffffffffffffff\n", true},
		{"missing field", "Name:\tx\nCapPrm:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n", false},
		{"empty", "", false},
		{"empty value", "CapEff:\n", false},
		{"blank value", "CapEff:\t \n", false},
		{"garbage hex", "CapEff:\tzzzzzzzzzzzzzzzz\n", false},
		{"0x prefix", "CapEff:\t0x200000\n", false},
		{"trailing garbage", "CapEff:\t0000000000200000 junk\n", false},
		{"negative", "CapEff:\t-200000\n", false},
		{"too wide", "CapEff:\t1000000000000200000\n", false},
		{"first CapEff decides", "CapEff:\t0000000000000000\nCapEff:\t0000000000200000\n", false},
		{"first CapEff decides (set)", "CapEff:\t0000000000200000\nCapEff:\t0\n", true},
		{"garbage first", "CapEff:\tnope\nCapEff:\t0000000000200000\n", false},
		{"other field has the bit", "CapPrm:\t0000000000200000\nCapEff:\t0\n", false},
		{"indented field is not the field", " CapEff:\t0000000000200000\n", false},
		{"lower-case name", "capeff:\t0000000000200000\n", false},
		{"no colon", "CapEff\t0000000000200000\n", false},
		{"NUL in value", "CapEff:\t00000000002\x0000000\n", false},
	}
	for _, tt := range tests {
		if got := hasCap([]byte(tt.status), "CapEff:", capSysAdmin); got != tt.want {
			t.Errorf("%s: hasCap(%q) = %v, want %v", tt.name, tt.status, got, tt.want)
		}
	}
	// Every bit of a 64-bit set is reachable, and only its own.
	for bit := uint(0); bit < 64; bit++ {
		line := "CapEff:\t" + hex64(1<<bit) + "\n"
		for probe := uint(0); probe < 64; probe++ {
			if got := hasCap([]byte(line), "CapEff:", probe); got != (probe == bit) {
				t.Fatalf("bit %d set, probe %d: %v", bit, probe, got)
			}
		}
	}
}

func hex64(v uint64) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 16)
	for i := 15; i >= 0; i-- {
		b[i] = digits[v&15]
		v >>= 4
	}
	return string(b)
}

// hasCap on our own /proc/self/status agrees with capget(2).
func TestHasCapSelf(t *testing.T) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Skip(err)
	}
	eff := uint64(data[0].Effective) | uint64(data[1].Effective)<<32
	prm := uint64(data[0].Permitted) | uint64(data[1].Permitted)<<32
	for bit := uint(0); bit < 64; bit++ {
		if got, want := hasCap(b, "CapEff:", bit), eff&(1<<bit) != 0; got != want {
			t.Errorf("CapEff bit %d: hasCap %v, capget %v", bit, got, want)
		}
		if got, want := hasCap(b, "CapPrm:", bit), prm&(1<<bit) != 0; got != want {
			t.Errorf("CapPrm bit %d: hasCap %v, capget %v", bit, got, want)
		}
	}
}

func FuzzHasCap(f *testing.F) {
	for _, name := range []string{"status-root", "status-nosysadmin", "status-user"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint(capSysAdmin))
	}
	f.Add([]byte("CapEff:\t0000000000200000\n"), uint(21))
	f.Add([]byte("CapEff:"), uint(0))
	f.Add([]byte("CapEff:\n"), uint(63))
	f.Add([]byte("CapEff:\tffffffffffffffff"), uint(64))
	f.Add([]byte("\n\n\nCapEff:\t\xff\xfe"), uint(1000))
	f.Add([]byte{}, uint(21))
	f.Fuzz(func(t *testing.T, status []byte, bit uint) {
		orig := string(status)
		got := hasCap(status, "CapEff:", bit)
		if string(status) != orig {
			t.Fatal("hasCap modified its input")
		}
		if !strings.Contains(orig, "CapEff:") && got {
			t.Fatalf("hasCap(%q) true without a CapEff field", orig)
		}
		if bit >= 64 && got {
			t.Fatalf("hasCap(%q, bit %d) true for a bit outside a 64-bit set", orig, bit)
		}
		// Other field names must not panic either.
		_ = hasCap(status, "", bit)
		_ = hasCap(status, "CapPrm:", bit)
	})
}
