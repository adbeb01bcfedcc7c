package supervisor

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// uidLimit is one past the highest id a range may cover: (uid_t)-1 is never
// a valid id.
const uidLimit = 1<<32 - 1

func TestParseIDMap(t *testing.T) {
	valid := []struct {
		in   string
		want IDMap
	}{
		{"100000", IDMap{Host: 100000, Size: 65536}},
		{"100000:65536", IDMap{Host: 100000, Size: 65536}},
		{"1", IDMap{Host: 1, Size: 65536}},
		{"1:1", IDMap{Host: 1, Size: 1}},
		{"200000:1000", IDMap{Host: 200000, Size: 1000}},
		{"4294967294:1", IDMap{Host: 4294967294, Size: 1}},   // last valid id
		{"4294901759", IDMap{Host: 4294901759, Size: 65536}}, // default size, just fits
		{"1:4294967294", IDMap{Host: 1, Size: 4294967294}},   // the whole space but 0
		{"4294967290:5", IDMap{Host: 4294967290, Size: 5}},   // ends at 4294967294
		{"0100000:065536", IDMap{Host: 100000, Size: 65536}}, // decimal despite leading zeros
		{"+100000", IDMap{Host: 100000, Size: 65536}},        // strconv.Atoi accepts a sign
		{"100000:+10", IDMap{Host: 100000, Size: 10}},        // likewise
		{"2147483648:2147483647", IDMap{Host: 1 << 31, Size: 1<<31 - 1}},
	}
	for _, tt := range valid {
		got, err := ParseIDMap(tt.in)
		if err != nil {
			t.Errorf("ParseIDMap(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseIDMap(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
	invalid := []struct {
		in, why string
	}{
		{"0", "host root"},
		{"0:10", "host root"},
		{"-0", "host root"},
		{"00", "host root"},
		{"-1", "negative"},
		{"-100000:10", "negative"},
		{"abc", "not a number"},
		{"", "empty"},
		{":", "empty"},
		{":10", "empty host"},
		{"1:0", "zero count"},
		{"1:-5", "negative count"},
		{"1:x", "bad count"},
		{"1:", "empty count"},
		{"1:2:3", "three fields"},
		{" 100000", "space"},
		{"100000 ", "space"},
		{"0x10000", "hex"},
		{"1e5", "exponent"},
		{"4294967290:100", "past the uid space"},
		{"4294967295:1", "(uid_t)-1"},
		{"4294967295", "(uid_t)-1"},
		{"4294901760", "default size runs past the space"},
		{"1:4294967295", "past the uid space"},
		{"99999999999999999999", "int overflow"},
		{"1:99999999999999999999", "int overflow"},
		// Host+Size overflows int: must still be refused.
		{"9223372036854775807", "host near MaxInt: Host+Size wraps"},
		{"9223372036854775807:1", "host MaxInt: Host+Size wraps"},
		{"1:9223372036854775807", "size MaxInt: Host+Size wraps"},
		{"9223372036854710272:65536", "Host+Size == MinInt"},
		{"4611686018427387904:4611686018427387904", "Host+Size == MinInt"},
		// Host's low 32 bits are 0 and Host+Size wraps: the kernel's
		// map_write keeps only the low 32 bits of each number, so writing
		// "0 9223372032559808512 4294967297" to uid_map maps the sandbox's
		// root to host root (checked by hand: /proc/PID/uid_map then reads
		// "0 0 1").
		{"9223372032559808512:4294967297", "host root after the kernel truncates to u32"},
	}
	for _, tt := range invalid {
		got, err := ParseIDMap(tt.in)
		if err == nil {
			t.Errorf("ParseIDMap(%q) = %+v, nil; want an error (%s)", tt.in, got, tt.why)
			continue
		}
		if !strings.Contains(err.Error(), "--uid-map") {
			t.Errorf("ParseIDMap(%q) error %q does not name the flag", tt.in, err)
		}
	}
}

func writeFixture(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "subid")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSubIDRange(t *testing.T) {
	tests := []struct {
		name, text, user string
		want             IDMap
		ok               bool
	}{
		{"simple", "root:100000:65536\n", "root", IDMap{100000, 65536}, true},
		{"no newline at end", "root:100000:65536", "root", IDMap{100000, 65536}, true},
		{"empty file", "", "root", IDMap{}, false},
		{"other users only", "alice:100000:65536\nbob:165536:65536\n", "root", IDMap{}, false},
		{"other users first", "alice:100000:65536\nbob:165536:65536\nroot:231072:65536\n", "root", IDMap{231072, 65536}, true},
		{"another user", "root:100000:65536\nalice:165536:1000\n", "alice", IDMap{165536, 1000}, true},
		{"comments and blanks", "# root:1:1\n\n   \n#root:2:2\nroot:300000:100\n", "root", IDMap{300000, 100}, true},
		{"surrounding spaces", "  root:400000:10  \n", "root", IDMap{400000, 10}, true},
		{"CRLF", "root:500000:20\r\n", "root", IDMap{500000, 20}, true},
		{"first range wins", "root:100000:65536\nroot:200000:65536\n", "root", IDMap{100000, 65536}, true},
		{"numeric owner 0", "0:600000:65536\n", "root", IDMap{600000, 65536}, true},
		{"numeric owner first wins", "0:600000:1\nroot:700000:2\n", "root", IDMap{600000, 1}, true},
		{"name first wins over numeric", "root:700000:2\n0:600000:1\n", "root", IDMap{700000, 2}, true},
		{"numeric owner 1000 is not root", "1000:600000:65536\n", "root", IDMap{}, false},
		{"malformed: two fields", "root:100000\nroot:200000:5\n", "root", IDMap{200000, 5}, true},
		{"malformed: four fields", "root:100000:5:6\nroot:200000:5\n", "root", IDMap{200000, 5}, true},
		{"malformed: letters", "root:abc:5\nroot:100:x\nroot:300:3\n", "root", IDMap{300, 3}, true},
		{"malformed: zero start", "root:0:65536\nroot:100000:1\n", "root", IDMap{100000, 1}, true},
		{"malformed: zero count", "root:100000:0\nroot:100000:1\n", "root", IDMap{100000, 1}, true},
		{"malformed: negative", "root:-5:10\nroot:10:-5\n", "root", IDMap{}, false},
		{"malformed: empty fields", "root::\n::\n:100:1\n", "root", IDMap{}, false},
		{"prefix of a name", "rootkit:100000:65536\n", "root", IDMap{}, false},
		{"name with spaces inside", "root :100000:65536\n", "root", IDMap{}, false},
		{"only malformed", "garbage\n:::\nroot:x:y\n", "root", IDMap{}, false},
	}
	for _, tt := range tests {
		got, ok := SubIDRange(writeFixture(t, tt.text), tt.user)
		if ok != tt.ok || got != tt.want {
			t.Errorf("%s: SubIDRange(%q, %q) = %+v, %v; want %+v, %v", tt.name, tt.text, tt.user, got, ok, tt.want, tt.ok)
		}
	}
	if got, ok := SubIDRange(filepath.Join(t.TempDir(), "missing"), "root"); ok {
		t.Errorf("missing file: %+v, true", got)
	}
	if got, ok := SubIDRange(t.TempDir(), "root"); ok {
		t.Errorf("directory: %+v, true", got)
	}
}

// A long file: the range after many other users is still found.
func TestSubIDRangeLong(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 5000; i++ {
		b.WriteString("user" + strconv.Itoa(i) + ":" + strconv.Itoa(100000+i*65536) + ":65536\n")
	}
	b.WriteString("root:1000000000:65536\n")
	got, ok := SubIDRange(writeFixture(t, b.String()), "root")
	if !ok || got != (IDMap{1000000000, 65536}) {
		t.Errorf("SubIDRange after 5000 lines = %+v, %v", got, ok)
	}
}

func FuzzParseIDMap(f *testing.F) {
	for _, s := range []string{
		"100000", "100000:65536", "0", "0:10", "-1", "abc", "1:0", "1:x",
		"4294967290:100", "4294967294:1", "1:4294967294", ":", "", "1:", "+1:+1",
		"99999999999999999999", "1:1:1", "1\x00:2",
		// Host+Size wraps int (a bug at the time of writing: accepted).
		"9223372036854775807", "9223372032559808512:4294967297",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseIDMap(s)
		if err != nil {
			return
		}
		if m.Host <= 0 || m.Size < 1 {
			t.Fatalf("ParseIDMap(%q) = %+v with a nil error", s, m)
		}
		// The range must fit the uid space, computed without overflow.
		if uint64(m.Host) >= uidLimit || uint64(m.Size) > uidLimit-uint64(m.Host) {
			t.Fatalf("ParseIDMap(%q) = %+v: range past the uid space with a nil error", s, m)
		}
		// What it accepted is what it parsed: the canonical form parses
		// back to the same map.
		m2, err := ParseIDMap(strconv.Itoa(m.Host) + ":" + strconv.Itoa(m.Size))
		if err != nil || m2 != m {
			t.Fatalf("ParseIDMap(%q) = %+v, but its canonical form gives %+v, %v", s, m, m2, err)
		}
	})
}

// Ranges that do not fit the uid space are malformed and skipped like the
// others: the kernel's uid_map parser keeps only the low 32 bits of each
// number, so "root:9223372032559808512:4294967297" would become the mapping
// "0 0 1" (the sandbox's root is host root) if DefaultMaps used it.
func TestSubIDRangeOutOfUIDSpace(t *testing.T) {
	for _, line := range []string{
		"root:9223372032559808512:4294967297", // wraps int; low 32 bits of start are 0
		"root:4294967296:65536",               // low 32 bits are 0: host root, no wrap needed
		"root:4294967290:100",                 // ends past it
		"root:4294967295:1",                   // (uid_t)-1
		"root:1:9223372036854775807",          // wraps int
	} {
		text := line + "\nroot:100000:65536\n"
		got, ok := SubIDRange(writeFixture(t, text), "root")
		if !ok || got != (IDMap{100000, 65536}) {
			t.Errorf("SubIDRange(%q) = %+v, %v; want the next, valid range {100000 65536}", text, got, ok)
		}
	}
}
