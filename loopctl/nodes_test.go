package loopctl

import (
	"os"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/loopvisor/loopvisor/notify"
)

// staleCaller is a trapped call that is no longer pending.
type staleCaller struct{}

func (staleCaller) GetFD(uint32) (notify.FD, error) { return notify.FD{}, ErrStale }
func (staleCaller) Read(uint64, []byte) error       { return ErrStale }
func (staleCaller) Write(uint64, []byte) error      { return ErrStale }
func (staleCaller) Privileged() (bool, error)       { return false, ErrStale }
func (staleCaller) Valid() bool                     { return false }

// TestGetFreeStale: LOOP_CTL_GET_FREE for a call that is gone does
// nothing (it may create a device) and answers as for any stale call.
// Before the fix it went on to allocate: here the instance's limit of 0
// made that ENOSPC.
func TestGetFreeStale(t *testing.T) {
	in := &Instance{devs: map[int]*os.File{}, binding: map[int]int{}, log: logrus.NewEntry(logrus.New())}
	log := func() *logrus.Entry { return in.log }
	for _, cmd := range []uint32{cmdCtlGetFree, cmdCtlAdd, cmdCtlRemove} {
		if r := in.control(staleCaller{}, log, cmd, 0); r != notify.Fail(ErrStale) {
			t.Errorf("%s on a stale call: %+v, want %v", CmdName(cmd), r, ErrStale)
		}
	}
}

// asUser reports whether uid with groups can open path for reading and
// writing (test -r && test -w as that user).
