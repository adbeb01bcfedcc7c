package supervisor

import (
	"bytes"
	"strconv"

	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/notify"
)

const capSysAdmin = 21

// caller adapts a notify.Target to loopctl.Caller.
type caller struct {
	*notify.Target
	userNS uint64 // the instance's user namespace
}

// Privileged reports whether the caller has CAP_SYS_ADMIN in the instance's
// own user namespace. A caller in a nested user namespace has its
// capabilities there, not in the instance's, and is not privileged.
func (c caller) Privileged() (bool, error) {
	ns, err := c.UserNS()
	if err != nil {
		return false, err
	}
	if ns != c.userNS {
		return false, nil
	}
	st, err := c.Status()
	if err != nil {
		return false, err
	}
	return hasCap(st, "CapEff:", capSysAdmin), nil
}

// hasCap parses a /proc/PID/status text for capability bit in the set named
// field.
func hasCap(status []byte, field string, bit uint) bool {
	for _, line := range bytes.Split(status, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte(field)) {
			continue
		}
		v, err := strconv.ParseUint(string(bytes.TrimSpace(line[len(field):])), 16, 64)
		return err == nil && v&(1<<bit) != 0
	}
	return false
}

var _ loopctl.Caller = caller{}
