package loopctl

import (
	"os"
	"slices"
	"testing"
)

// TestLowestHeldFree: GET_FREE's scan (lowestHeldFree over in.order) gives
// the lowest index that is held and not being bound, as the kernel gives
// the lowest unbound device, whatever order devices were added and dropped
// in; in.order always lists exactly the owned indices, ascending.
func TestLowestHeldFree(t *testing.T) {
	held := os.Stdin // any non-nil claim
	in := &Instance{devs: map[int]*os.File{}, binding: map[int]int{}}
	check := func(want int) {
		t.Helper()
		keys := make([]int, 0, len(in.devs))
		for idx := range in.devs {
			keys = append(keys, idx)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, in.order) {
			t.Fatalf("order %v, owned %v", in.order, keys)
		}
		if got := in.lowestHeldFree(); got != want {
			t.Fatalf("lowestHeldFree() = %d, want %d (devs %v, binding %v)", got, want, in.devs, in.binding)
		}
	}
	check(-1)
	for _, idx := range []int{40, 17, 3000, 16, 17} {
		in.addDev(idx)
	}
	check(-1) // owned, none claimed yet
	in.devs[40], in.devs[3000] = held, held
	check(40)
	in.devs[17] = held
	check(17)
	in.binding[17] = 1
	check(40)
	in.dropDev(40)
	check(3000)
	in.devs[16] = held
	check(16)
	in.dropDev(16)
	in.dropDev(16) // not owned any more: nothing changes
	delete(in.binding, 17)
	check(17)
	in.dropDev(17)
	in.dropDev(3000)
	check(-1)
	if len(in.order) != 0 {
		t.Fatalf("order %v after dropping everything", in.order)
	}
}
