package loopctl

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/loopvisor/loopvisor/internal/linux"

	"golang.org/x/sys/unix"
)

// Kernel uevents tell the instances at once when one of their devices
// changes state (the loop driver sends "change" when a device is bound or
// unbound, also by autoclear at the last close), so an unbound device is
// claimed again within microseconds instead of at the next watcher tick.
// The watcher stays as the fallback (no netlink, lost events).

var uevents struct {
	once sync.Once
	mu   sync.Mutex
	subs map[*Instance]bool
}

func subscribe(in *Instance) {
	uevents.once.Do(startUevents)
	uevents.mu.Lock()
	if uevents.subs == nil {
		uevents.subs = map[*Instance]bool{}
	}
	uevents.subs[in] = true
	uevents.mu.Unlock()
}

func unsubscribe(in *Instance) {
	uevents.mu.Lock()
	delete(uevents.subs, in)
	uevents.mu.Unlock()
}

func startUevents() {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		_ = unix.Close(fd)
		return
	}
	go func() {
		buf := make([]byte, 16<<10)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				if err == unix.EINTR || err == unix.ENOBUFS {
					continue // ENOBUFS: events were lost; the watcher covers them
				}
				return
			}
			idx, ok := ParseLoopUevent(buf[:n])
			if !ok {
				continue
			}
			uevents.mu.Lock()
			var subs []*Instance
			for in := range uevents.subs {
				subs = append(subs, in)
			}
			uevents.mu.Unlock()
			for _, in := range subs {
				if in.Owns(idx) {
					go in.kick(idx)
				}
			}
		}
	}()
}

// ParseLoopUevent returns the loop index of a kernel "change" uevent of a
// whole loop device ("change@/devices/virtual/block/loopN\0...").
func ParseLoopUevent(msg []byte) (int, bool) {
	head := msg
	if i := bytes.IndexByte(msg, 0); i >= 0 {
		head = msg[:i]
	}
	action, path, ok := strings.Cut(string(head), "@")
	if !ok || action != "change" {
		return -1, false
	}
	const prefix = "/devices/virtual/block/loop"
	if !strings.HasPrefix(path, prefix) {
		return -1, false
	}
	n, err := strconv.Atoi(path[len(prefix):])
	if err != nil || n < 0 || n > linux.MaxLoopMinor {
		return -1, false
	}
	return n, true
}

// kick claims idx if it became unbound. The event can come just before the
// driver finishes the teardown, so it looks again a few times.
func (in *Instance) kick(idx int) {
	for _, d := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond} {
		time.Sleep(d)
		in.mu.Lock()
		if in.closed {
			in.mu.Unlock()
			return
		}
		f, owned := in.devs[idx]
		if owned && f == nil {
			in.claim(idx)
			f = in.devs[idx]
		}
		in.mu.Unlock()
		if owned && f != nil {
			in.View.RefreshPartitions() // unbound: no size any more
		}
		if !owned || f != nil || Bound(idx) {
			return
		}
	}
}
