package mountinfo

import (
	"strings"
	"testing"
)

func TestUnescape(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"plain", "/mnt/a", "/mnt/a"},
		{"space", `/mnt/a\040b`, "/mnt/a b"},
		{"newline and tab", `/x\012y\011z`, "/x\ny\tz"},
		{"backslash", `/a\134b`, `/a\b`},
		{"not octal", `/a\999b`, `/a\999b`},
		{"over a byte", `/a\777b`, `/a\777b`},
		{"short", `/a\04`, `/a\04`},
		{"at the end", `/a\040`, "/a "},
		{"empty", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Unescape(c.in); got != c.want {
				t.Errorf("Unescape(%q) = %q, want %q", c.in, got, c.want)
			}
		})
	}
}

// FuzzUnescape: a container names its mount points, so Unescape reads
// hostile text: it must not panic, never lengthens it, and leaves text
// without a backslash alone.
func FuzzUnescape(f *testing.F) {
	for _, s := range []string{"/mnt", `/a\040b`, `\`, `\1`, `\0400`, `\\\\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Unescape(s)
		if len(got) > len(s) {
			t.Errorf("Unescape(%q) = %q: longer", s, got)
		}
		if !strings.Contains(s, `\`) && got != s {
			t.Errorf("Unescape(%q) = %q: changed text without a backslash", s, got)
		}
	})
}
