package supervisor

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// IDMap maps the sandbox's ids [0, Size) to host ids [Host, Host+Size).
type IDMap struct {
	Host int
	Size int
}

// DefaultIDMap is used when /etc/subuid has no range for root.
var DefaultIDMap = IDMap{Host: 100000, Size: 65536}

// ParseIDMap parses "HOST[:SIZE]" (--uid-map). Host uid 0 is refused: a
// sandbox whose root is host root needs no loopvisor and proves nothing.
func ParseIDMap(s string) (IDMap, error) {
	m := IDMap{Size: 65536}
	host, size, hasSize := strings.Cut(s, ":")
	var err error
	if m.Host, err = strconv.Atoi(host); err != nil || m.Host < 0 {
		return m, fmt.Errorf("--uid-map %q: want HOSTUID[:COUNT], e.g. 100000:65536", s)
	}
	if hasSize {
		if m.Size, err = strconv.Atoi(size); err != nil || m.Size < 1 {
			return m, fmt.Errorf("--uid-map %q: COUNT must be a positive number", s)
		}
	}
	if m.Host == 0 {
		return m, fmt.Errorf("--uid-map %q: the sandbox's root must not be host root; pick an unprivileged range such as 100000:65536", s)
	}
	// The kernel keeps only the low 32 bits of each uid_map number: a range
	// beyond the uid space would wrap around to host root.
	if m.Host > 1<<32-1 || m.Size > 1<<32-1-m.Host {
		return m, fmt.Errorf("--uid-map %q: range exceeds the uid space", s)
	}
	return m, nil
}

// SubIDRange returns the first range of user in file (/etc/subuid format),
// or ok=false.
func SubIDRange(file, user string) (IDMap, bool) {
	f, err := os.Open(file)
	if err != nil {
		return IDMap{}, false
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(parts) != 3 || (parts[0] != user && (user != "root" || parts[0] != "0")) {
			continue
		}
		start, err1 := strconv.Atoi(parts[1])
		n, err2 := strconv.Atoi(parts[2])
		if err1 != nil || err2 != nil || start <= 0 || n <= 0 || start > 1<<32-1 || n > 1<<32-1-start {
			continue
		}
		return IDMap{Host: start, Size: n}, true
	}
	return IDMap{}, false
}

// DefaultMaps returns root's first ranges in /etc/subuid and /etc/subgid,
// else DefaultIDMap.
func DefaultMaps() (uid, gid IDMap) {
	uid, ok := SubIDRange("/etc/subuid", "root")
	if !ok {
		uid = DefaultIDMap
	}
	gid, ok = SubIDRange("/etc/subgid", "root")
	if !ok {
		gid = uid
	}
	return uid, gid
}
