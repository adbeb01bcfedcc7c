package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loopvisor/loopvisor/tests/oci"
)

// Hostile suite, issue 8 attacks 3 and 4: a reference a sandbox keeps to
// one of its device nodes (an O_PATH fd reopened through /proc/self/fd, a
// bind mount of the node, a hard link) must die with the device's
// ownership. It must never reach the device another tenant gets next, nor
// make the kernel create the device again (block legacy autoload).

// OtherUID is the host uid of a second tenant's root.
const OtherUID = 200000

// keepRefs is the sandbox script part that takes every kind of reference
// to /dev/loop$n and then gives the device back with LOOP_CTL_REMOVE.
const keepRefs = `
stalenode /dev/loop$n go > stale.out &
while ! grep -q held stale.out 2>/dev/null; do sleep 0.02; done
touch bind.target
if mount --bind /dev/loop$n bind.target 2>/dev/null; then echo "bind made"; else echo "bind refused"; fi
if ln /dev/loop$n /dev/.keep-link 2>/dev/null; then echo "link made"; else echo "link refused"; fi
echo "remove $(loopctl remove $n)"
`

// useRefs reopens every reference keepRefs took.
const useRefs = `
wait
echo "--- stale"; cat stale.out
echo "bindopen $(loopctl open bind.target)"
if [ -e /dev/.keep-link ]; then echo "linkopen $(loopctl open /dev/.keep-link)"; fi
`

// getFree is the sandbox script part that gets a device of the instance
// into $n.
const getFree = `set -u
r=$(loopctl getfree); n=${r#OK }
[ "$r" = "OK $n" ] || { echo "getfree: $r"; exit 1; }
`

// touch creates the signal file p; tests fail if it cannot.
func touch(t *testing.T, p string) {
	t.Helper()
	if err := os.WriteFile(p, []byte("x\n"), 0o644); err != nil {
		t.Error(err)
	}
}

// loopDevices lists the host's loop devices.
func loopDevices() []string {
	devs, _ := filepath.Glob("/sys/devices/virtual/block/loop*")
	sort.Strings(devs)
	for i, d := range devs {
		devs[i] = filepath.Base(d)
	}
	return devs
}

// removeStrays returns a func to name loop indices the test's sandbox used;
// at the end, those among them that did not exist before the test, exist
// now and are unbound (what a successful attack 4 leaves) are removed.
// Only named indices: other devices on the machine are not the test's.
func removeStrays(t *testing.T) func(idx string) {
	t.Helper()
	had := map[string]bool{}
	for _, d := range loopDevices() {
		had[d] = true
	}
	var used []string
	t.Cleanup(func() {
		for _, n := range used {
			d := "loop" + n
			if had[d] || bound("/dev/"+d) {
				continue
			}
			if _, err := os.Stat("/sys/devices/virtual/block/" + d); err != nil {
				continue
			}
			r := run(t, "/", filepath.Join(binDir, "loopctl"), "remove", n)
			t.Logf("removed stray host device %s: %s", d, strings.TrimSpace(r.Stdout))
		}
	})
	return func(idx string) { used = append(used, idx) }
}

// checkRefsDead fails t if out shows a kept reference that still opened
// the device.
func checkRefsDead(t *testing.T, out string) {
	t.Helper()
	if !strings.Contains(out, "remove OK 0\n") {
		t.Fatalf("the sandbox could not give its device back:\n%s", out)
	}
	if !strings.Contains(out, "--- stale\nheld\nreopen ERR ") {
		t.Errorf("a kept O_PATH fd reopened the device through /proc/self/fd:\n%s", out)
	}
	if !strings.Contains(out, "bindopen ERR ") {
		t.Errorf("a bind mount of the node opened the device:\n%s", out)
	}
	if strings.Contains(out, "linkopen OK") {
		t.Errorf("a hard link of the node opened the device:\n%s", out)
	}
}

// TestAttack3StaleNodeNextTenant: sandbox A keeps references to its loopN
// and gives the device back; sandbox B (another host uid) attaches its
// private image and gets loopN. None of A's references may read B's data
// or write into B's image.
func TestAttack3StaleNodeNextTenant(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	stray := removeStrays(t)
	state, dirA := stateDir(t), workDir(t)
	dirB := workDir(t)
	check(t, os.Chown(dirB, OtherUID, OtherUID))
	secret := append([]byte("B-SECRET-DATA..."), make([]byte, 8<<20)...)
	bImg := filepath.Join(dirB, "b.img")
	check(t, os.WriteFile(bImg, secret, 0o600))
	check(t, os.Chown(bImg, OtherUID, OtherUID))
	// Whatever happens, neither sandbox waits for ever.
	defer touch(t, filepath.Join(dirA, "go"))
	defer touch(t, filepath.Join(dirB, "done"))

	var wg sync.WaitGroup
	var ra, rb result
	wg.Add(1)
	go func() {
		defer wg.Done()
		ra = sandbox(t, dirA, state, nil, getFree+keepRefs+`echo $n > idx.tmp && mv idx.tmp idx
`+useRefs)
	}()
	n := waitFile(t, filepath.Join(dirA, "idx"), time.Minute)
	stray(n)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rb = run(t, dirB, loopvisor, "run", "--state-dir", state,
			"--uid-map", fmt.Sprintf("%d:65536", OtherUID), "--gid-map", fmt.Sprintf("%d:65536", OtherUID), "--",
			"sh", "-c", `d=$(losetup -f --show b.img) || exit 1; echo $d > dev.tmp; mv dev.tmp dev
while [ ! -f done ]; do sleep 0.02; done; losetup -d $d`)
	}()
	// loopvisor keeps an index a sandbox gave back until the sandbox ends,
	// so B gets another one; the references must be dead either way.
	devB := waitFile(t, filepath.Join(dirB, "dev"), time.Minute)
	t.Logf("sandbox A gave back loop%s; sandbox B got %s", n, devB)
	touch(t, filepath.Join(dirA, "go"))
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(dirA, "stale.out"))
		if strings.Contains(string(b), "reopen") || time.Now().After(deadline) {
			break
		}
	}
	// B's image is checked while B still has it attached.
	time.Sleep(100 * time.Millisecond)
	img, _ := os.ReadFile(bImg)
	touch(t, filepath.Join(dirB, "done"))
	wg.Wait()
	if ra.Code != 0 || rb.Code != 0 {
		t.Fatalf("sandbox A:\n%s\nsandbox B:\n%s", ra, rb)
	}
	t.Logf("sandbox A (loop%s):\n%s", n, ra.Stdout)
	if strings.Contains(ra.Stdout, "B-SECRET") {
		t.Errorf("sandbox A read sandbox B's data through a kept node:\n%s", ra.Stdout)
	}
	if bytes.Contains(img, []byte("A-WAS-HERE")) {
		t.Errorf("sandbox A wrote into sandbox B's image through a kept node")
	}
	checkRefsDead(t, ra.Stdout)
}

// TestAttack4StaleNodeAutoload: reopening a kept node whose device is gone
// must not make the kernel create the device again: no new host device, none
// past --max-loop, none left after exit.
func TestAttack4StaleNodeAutoload(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	before := loopDevices()
	stray := removeStrays(t)
	state, dir := stateDir(t), workDir(t)
	defer touch(t, filepath.Join(dir, "checked"))
	var wg sync.WaitGroup
	var r result
	wg.Add(1)
	go func() {
		defer wg.Done()
		r = sandbox(t, dir, state, []string{"--max-loop", "1"}, getFree+keepRefs+`touch go
`+useRefs+`echo $n > idx.tmp && mv idx.tmp idx
while [ ! -f checked ]; do sleep 0.02; done
echo "again $(loopctl getfree)"
echo "bindopen-again $(loopctl open bind.target)"
echo "node-again $(loopctl open /dev/loop$n | cut -c1-2)"
echo "add $(loopctl add -1)"
`)
	}()
	n := waitFile(t, filepath.Join(dir, "idx"), time.Minute)
	stray(n)
	during := loopDevices()
	journaled := map[string]bool{}
	js, _ := filepath.Glob(filepath.Join(state, "instances", "*.json"))
	for _, j := range js {
		var jr struct{ Devices []int }
		if b, err := os.ReadFile(j); err == nil && json.Unmarshal(b, &jr) == nil {
			for _, d := range jr.Devices {
				journaled["loop"+strconv.Itoa(d)] = true
			}
		}
	}
	touch(t, filepath.Join(dir, "checked"))
	wg.Wait()
	if r.Code != 0 {
		t.Fatalf("sandbox:\n%s", r)
	}
	t.Logf("sandbox (loop%s):\n%s", n, r.Stdout)
	had := map[string]bool{}
	for _, d := range before {
		had[d] = true
	}
	for _, d := range during {
		if !had[d] && !journaled[d] {
			t.Errorf("reopening kept nodes of the removed loop%s created %s, in no journal:\nbefore %v\nafter  %v", n, d, before, during)
		}
	}
	if len(journaled) > 1 {
		t.Errorf("the instance holds %v, past --max-loop 1", journaled)
	}
	checkRefsDead(t, r.Stdout)
	// The index is the instance's again, with a fresh node: the kept
	// references stay dead, the new node opens, the limit still holds.
	for _, w := range []string{"again OK " + n, "bindopen-again ERR EACCES", "node-again OK", "add ERR ENOSPC"} {
		if !strings.Contains(r.Stdout, w+"\n") {
			t.Errorf("want %q in\n%s", w, r.Stdout)
		}
	}
}

// TestStaleNodeOpenFD: a plain fd kept open keeps the device: REMOVE gives
// EBUSY as on the host, and the node still opens afterwards; once the fd is
// closed REMOVE succeeds and the node is gone.
func TestStaleNodeOpenFD(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	script := func(sbox bool) string {
		s := `set -u
r=$(loopctl ` + map[bool]string{true: "getfree", false: "add -1"}[sbox] + `); n=${r#OK }
exec 3<>/dev/loop$n
echo "remove-open $(loopctl remove $n)"
echo "reopen $(loopctl open /dev/loop$n | cut -c1-2)"
exec 3>&-
echo "remove-closed $(loopctl remove $n)"
`
		if sbox {
			s += `echo "gone $(ls /dev | grep -cx loop$n)"
`
		}
		return s
	}
	want := "remove-open ERR EBUSY\nreopen OK\nremove-closed OK 0\n"
	// On the host, as host root, with a device of its own.
	h := run(t, dir, "sh", "-c", strings.ReplaceAll(script(false), "loopctl", filepath.Join(binDir, "loopctl")))
	if h.Code != 0 || h.Stdout != want {
		t.Fatalf("host:\n%s", h)
	}
	out := sandboxOK(t, dir, state, nil, script(true))
	if out != want+"gone 0\n" {
		t.Errorf("sandbox differs from the host (%q):\n%s", want, out)
	}
}

// TestLeftDeviceTombstone: a device something outside the sandbox still
// holds open when the sandbox ends cannot be removed. It stays journaled and
// is bound to an empty read-only file, so the host's LOOP_CTL_GET_FREE does
// not hand it out while the opener could read what the host attaches; gc
// releases it once the opener is gone.
func TestLeftDeviceTombstone(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	defer touch(t, filepath.Join(dir, "held"))
	done := make(chan result, 1)
	go func() {
		done <- sandbox(t, dir, state, nil, getFree+`echo $n > idx.tmp && mv idx.tmp idx
while [ ! -f held ]; do sleep 0.02; done`)
	}()
	n := waitFile(t, filepath.Join(dir, "idx"), time.Minute)
	f, err := os.Open("/dev/loop" + n)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	touch(t, filepath.Join(dir, "held"))
	if r := <-done; r.Code != 0 {
		t.Fatalf("sandbox:\n%s", r)
	}
	back, _ := os.ReadFile("/sys/block/loop" + n + "/loop/backing_file")
	ro, _ := os.ReadFile("/sys/block/loop" + n + "/ro")
	if !strings.Contains(string(back), "loopvisor-tombstone") || strings.TrimSpace(string(ro)) != "1" {
		t.Errorf("loop%s, left open by the host, is not tombstoned: backing %q ro %q", n, back, ro)
	}
	if g := run(t, dir, filepath.Join(binDir, "loopctl"), "getfree"); strings.TrimSpace(g.Stdout) == "OK "+n {
		t.Errorf("the host's LOOP_CTL_GET_FREE hands out loop%s, still open from outside", n)
	}
	if js, _ := filepath.Glob(filepath.Join(state, "instances", "*.json")); len(js) != 1 {
		t.Errorf("the left device is not journaled: %v", js)
	}
	if r := run(t, dir, loopvisor, "gc", "--state-dir", state); r.Code == 0 {
		t.Errorf("gc released a device still open:\n%s", r)
	}
	check(t, f.Close())
	if r := run(t, dir, loopvisor, "gc", "--state-dir", state, "--wait", "2s"); r.Code != 0 || !strings.Contains(r.Stdout, "released 1") {
		t.Errorf("gc after the opener closed:\n%s", r)
	}
}

// TestStalePartitionNode: references kept to a partition node (loopNpM)
// die with the partition, as those to a whole device do.
func TestStalePartitionNode(t *testing.T) {
	needRoot(t)
	needTools(t, "sfdisk")
	hostGuard(t)
	stray := removeStrays(t)
	state, dir := stateDir(t), workDir(t)
	out := sandboxOK(t, dir, state, nil, `set -e
truncate -s 64M disk.img
printf 'label: dos\n,16M,83\n' | sfdisk -q disk.img
dev=$(losetup -P -f --show disk.img)
echo "child $((0x$(stat -c %T ${dev}p1)))"
stalenode ${dev}p1 go > stale.out &
while ! grep -q held stale.out 2>/dev/null; do sleep 0.02; done
touch bind.target
mount --bind ${dev}p1 bind.target
losetup -d $dev
touch go; wait
echo "--- stale"; cat stale.out
echo "bindopen $(loopctl open bind.target)"
echo "parts $(ls /dev | grep -c 'loop[0-9]*p[0-9]')"`)
	if m := regexp.MustCompile(`child (\d+)`).FindStringSubmatch(out); m != nil {
		stray(m[1])
	}
	for _, w := range []string{"--- stale\nheld\nreopen ERR EACCES\n", "bindopen ERR EACCES\n", "parts 0\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("want %q in\n%s", w, out)
		}
	}
}

// TestStaleNodeOCI: in a runc or crun container the agent bind-mounts each
// node into the container's own /dev; references kept there die the same
// way, and the index is the container's again with a fresh node.
func TestStaleNodeOCI(t *testing.T) {
	needRoot(t)
	runtimes(t, func(t *testing.T, rt *oci.Runtime) {
		hostGuard(t)
		a := startAgent(t, stateDir(t))
		dir := tempBundleDir(t)
		// The probes are copied into the image at their host paths.
		b, err := oci.NewBundle(dir, []string{"sh", "-c", `set -u
PATH=` + binDir + `:$PATH
cd /tmp
r=$(loopctl getfree); n=${r#OK }
stalenode /dev/loop$n go > stale.out &
i=0; while ! grep -q held stale.out && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done
: > bind.target
if mount --bind /dev/loop$n bind.target; then echo "bind made"; else echo "bind refused"; fi
echo "remove $(loopctl remove $n)"
: > go; wait
echo "--- stale"; cat stale.out
echo "bindopen $(loopctl open bind.target)"
echo "again $(loopctl getfree) $n"
echo "node-again $(loopctl open /dev/loop$n)"`},
			"grep", filepath.Join(binDir, "loopctl"), filepath.Join(binDir, "stalenode"))
		if err != nil {
			t.Fatal(err)
		}
		ociConfig(t, a, b)
		res, err := rt.Run(b, nil)
		if err != nil || res.Code != 0 {
			t.Fatalf("container: %v\n%s", err, res)
		}
		out := res.Stdout
		t.Logf("container:\n%s", out)
		checkRefsDead(t, out)
		if !regexp.MustCompile(`again OK (\d+) (\d+)\n`).MatchString(out) || !strings.Contains(out, "node-again OK") {
			t.Errorf("the kept index is not handed out again with a node that opens:\n%s", out)
		} else if m := regexp.MustCompile(`again OK (\d+) (\d+)\n`).FindStringSubmatch(out); m[1] != m[2] {
			t.Errorf("GET_FREE gave loop%s, not the kept loop%s:\n%s", m[1], m[2], out)
		}
		waitGone(t, a)
	})
}
