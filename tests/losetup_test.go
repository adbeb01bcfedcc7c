package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var loopName = regexp.MustCompile(`/dev/loop[0-9]+`)

// normalize hides the device index, which differs between host and
// sandbox by design.
func normalize(s string) string { return loopName.ReplaceAllString(s, "/dev/loopN") }

// sameAsHost runs script as host root and inside a sandbox, each in a fresh
// copy of the working directory with a 32 MiB disk.img, and requires equal
// output. It also requires the script to fail without loopvisor.
func sameAsHost(t *testing.T, script string) {
	t.Helper()
	hostGuard(t)
	state := stateDir(t)
	hostDir, sbDir := workDir(t), workDir(t)
	// Both runs must name the same backing file path: run them in the same
	// directory, one after the other, with a fresh image each time.
	_ = hostDir
	image(t, sbDir, "disk.img", 32<<20)
	hr := run(t, sbDir, "sh", "-c", script)
	if hr.Code != 0 {
		t.Fatalf("script fails on the host:\n%s\n%s", script, hr)
	}
	image(t, sbDir, "disk.img", 32<<20)
	sr := sandbox(t, sbDir, state, nil, script)
	if sr.Code != 0 {
		t.Fatalf("script fails in the sandbox:\n%s\n%s", script, sr)
	}
	if h, s := normalize(hr.Stdout), normalize(sr.Stdout); h != s {
		t.Fatalf("sandbox differs from host for\n%s\n--- host\n%s--- sandbox\n%s", script, h, s)
	}
	image(t, sbDir, "disk.img", 32<<20)
	bareFails(t, sbDir, state, script)
}

func TestLosetupFindShow(t *testing.T) {
	needRoot(t)
	sameAsHost(t, `set -e
d=$(losetup -f --show disk.img)
echo "$d" | grep -q '^/dev/loop[0-9]*$'
losetup -n -O NAME,OFFSET,SIZELIMIT,RO,AUTOCLEAR,LOG-SEC,BACK-FILE --list "$d"
blockdev --getsize64 "$d"
cat /sys/block/$(basename "$d")/loop/backing_file
losetup -d "$d"`)
}

func TestLosetupOffsetSizelimit(t *testing.T) {
	needRoot(t)
	sameAsHost(t, `set -e
d=$(losetup -f --show --offset 1048576 --sizelimit 4194304 disk.img)
losetup -n -O NAME,OFFSET,SIZELIMIT,RO --list "$d"
blockdev --getsize64 "$d"
printf 'hello-offset' | dd of="$d" conv=notrunc status=none
sync
dd if=disk.img bs=1 skip=1048576 count=12 status=none; echo
losetup -d "$d"`)
}

func TestLosetupReadOnly(t *testing.T) {
	needRoot(t)
	sameAsHost(t, `set -e
d=$(losetup -f --show -r disk.img)
losetup -n -O NAME,RO --list "$d"
blockdev --getro "$d"
if dd if=/dev/zero of="$d" bs=512 count=1 status=none 2>/dev/null; then echo wrote; else echo write refused; fi
losetup -d "$d"`)
}

func TestLosetupCapacity(t *testing.T) {
	needRoot(t)
	sameAsHost(t, `set -e
d=$(losetup -f --show disk.img)
blockdev --getsize64 "$d"
truncate -s 48M disk.img
blockdev --getsize64 "$d"
losetup -c "$d"
blockdev --getsize64 "$d"
losetup -d "$d"`)
}

func TestLosetupDetachAll(t *testing.T) {
	needRoot(t)
	sameAsHost(t, `set -e
cp disk.img b.img
a=$(losetup -f --show disk.img)
b=$(losetup -f --show b.img)
losetup -j disk.img | sed 's/:.*//' | grep -c loop
losetup -D
losetup -j disk.img | wc -l
losetup -j b.img | wc -l
rm b.img`)
}

// TestLosetupListSandbox checks what only the sandbox can show: its own
// devices and nothing else in losetup -a, --list, lsblk and /dev.
func TestLosetupListOnlyOwn(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	state := stateDir(t)
	dir := workDir(t)
	image(t, dir, "disk.img", 32<<20)
	image(t, dir, "b.img", 16<<20)
	// A host device bound during the test must stay invisible inside.
	hostImg := image(t, dir, "host.img", 8<<20)
	hr := run(t, dir, "losetup", "-f", "--show", hostImg)
	if hr.Code != 0 {
		t.Fatal(hr)
	}
	hostDev := strings.TrimSpace(hr.Stdout)
	defer run(t, dir, "losetup", "-d", hostDev)

	out := sandboxOK(t, dir, state, nil, `set -e
a=$(losetup -f --show disk.img); b=$(losetup -f --show -r b.img)
echo "A=$a B=$b"
echo "--- losetup -a"; losetup -a | sed 's/:.*(/ (/' | sort
echo "--- list"; losetup --list -n -O NAME,BACK-FILE | sort
echo "--- lsblk"; lsblk -n -o NAME,TYPE | grep loop | sort
echo "--- dev"; ls /dev | grep '^loop' | sort
echo "--- sys"; ls /sys/block | grep '^loop' | sed 's/$/ /' | sort
losetup -d "$a" "$b"`)
	m := regexp.MustCompile(`A=/dev/(loop\d+) B=/dev/(loop\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no device names in\n%s", out)
	}
	a, b := m[1], m[2]
	for _, sec := range []string{"losetup -a", "list", "lsblk", "sys"} {
		part := section(out, sec)
		if lines(part) != 2 || !strings.Contains(part, a+" ") || !strings.Contains(part, b+" ") {
			t.Errorf("%s should show exactly %s and %s:\n%s", sec, a, b, part)
		}
	}
	if dev := section(out, "dev"); lines(dev) != 3 || !strings.Contains(dev, "loop-control") {
		t.Errorf("/dev should hold loop-control, %s and %s only:\n%s", a, b, dev)
	}
	if strings.Contains(out, filepath.Base(hostDev)+" ") || strings.Contains(out, hostImg) {
		t.Errorf("the host's %s is visible in the sandbox:\n%s", hostDev, out)
	}
	bareFails(t, dir, state, `losetup -f --show disk.img`)
}

func lines(s string) int { return len(strings.Fields(strings.ReplaceAll(s, " ", "_"))) }

// section returns the lines after "--- name" up to the next "---".
func section(out, name string) string {
	_, rest, ok := strings.Cut(out, "--- "+name+"\n")
	if !ok {
		return ""
	}
	if i := strings.Index(rest, "---"); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

func TestBusyboxLosetup(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("busybox not installed (make deps)")
	}
	sameAsHost(t, `set -e
d=$(busybox losetup -f)
busybox losetup "$d" disk.img
busybox losetup "$d" | sed 's/^[^:]*: //'
busybox losetup -a | grep -c disk.img
busybox losetup -d "$d"
busybox losetup -a | grep -c disk.img || true
d=$(busybox losetup -f)
busybox losetup -o 4096 -r "$d" disk.img
busybox losetup "$d" | sed 's/^[^:]*: //'
blockdev --getro "$d"
busybox losetup -d "$d"`)
}
