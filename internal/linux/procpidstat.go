package linux

import (
	"errors"
	"os"
	"strconv"
	"strings"
)

// PidStat is what loopvisor reads of /proc/PID/stat (proc(5)).
type PidStat struct {
	State     byte   // field 3: R, S, D, Z, X, ...
	StartTime uint64 // field 22: clock ticks after boot
}

// ReadPidStat reads /proc/PID/stat. The command name (field 2) may hold
// spaces and parentheses, so the fields after it are found from its last
// ')'. A process that is gone gives the read's error (ENOENT or ESRCH).
func ReadPidStat(pid int) (PidStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return PidStat{}, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return PidStat{}, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return PidStat{}, errors.New("malformed stat")
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return PidStat{}, err
	}
	return PidStat{State: f[0][0], StartTime: start}, nil
}
