package mountinfo

import (
	"strconv"
	"strings"
)

// Unescape undoes mountinfo's octal escapes (\040 for a space, \011,
// \012, \134 for a backslash): the kernel escapes those in paths and
// sources. A backslash not followed by three octal digits of a byte stays.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
