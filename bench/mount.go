package main

// The mount figures: `mount -o loop` + `umount` cycles and cold sequential
// reads, host root against loopvisor sandboxes (FUSE default and
// --allow-kernel-mount ext4).
//
// Every set-up is one long-lived process running csrc/mountprobe.c, which
// takes its commands on stdin and times itself, so the sandbox's start-up
// is not measured and the bench can drop the page cache (host root only)
// between commands. Rounds visit the set-ups in turn, starting with a
// different one each round, and ratios are taken within a round.
//
// A cold read is: mount -o loop,ro, drop the page cache, touch fresh memory
// (see prefault), read the file, umount. It is measured twice: with the
// image on the disk (what a cold read costs here) and with the image in a
// tmpfs of the set-up's own (the file system path alone, no disk).

import (
	"archive/tar"
	"bufio"
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

//go:embed csrc/mountprobe.c
var mountProbeSource []byte

// Targets for the mount figures.
const (
	targetCycleRatio     = 2.0 // kernel mount in the sandbox / host, per cycle
	targetFuseCycleRatio = 3.0 // FUSE in the sandbox / host, per cycle
	targetReadRatio      = 0.6 // FUSE / kernel mount, both in the sandbox, cold read, image on disk
	targetRAMReadRatio   = 0.8 // the same, image in tmpfs
	targetWriteRatio     = 0.6 // FUSE / kernel mount, sequential write, image in tmpfs
	targetUntarRatio     = 3.0 // FUSE / kernel mount, time to unpack the tree, image in tmpfs
)

// mountConfig says how much to measure.
type mountConfig struct {
	rounds, cycles  int // rounds of cycles, cycles per round and set-up
	readRounds      int // cold reads per set-up and phase (after a warm-up)
	readMiB, imgMiB int // size of the file read; of the image cycled
	writeRounds     int // rounds of writes and unpacks (after a warm-up)
	writeMiB        int // size of the file written
	treeFiles       int // files in the tree unpacked
}

// mountSetup is one way of mounting: on the host or in a sandbox.
type mountSetup struct {
	key, label string
	argv       []string
	mnt        string // mount point, relative to the work dir
	ram        string // a tmpfs of the set-up's own, relative to the work dir
}

// readPhase is where the image read from lives.
type readPhase struct {
	key, label string
	img        func(s mountSetup) string
}

var readPhases = []readPhase{
	{"disk", "image file on the disk (/tmp): what a cold read costs", func(mountSetup) string { return "read.img" }},
	{"ram", "image file in a tmpfs of each set-up's own (no disk below the loop device): the file system path alone", func(s mountSetup) string { return s.ram + "/read.img" }},
}

type mountResults struct {
	setups []mountSetup
	cycle  map[string][][]float64          // ms per cycle, by set-up key and round
	read   map[string]map[string][]float64 // MB/s of cold reads, by phase, set-up key and round
	// CPU time (ms) the FUSE helper spent on each read, by phase and key.
	helperCPU map[string]map[string][]float64
	fstype    map[string]string    // what the read phase found mounted, by key
	fuseOp    map[string]string    // the -o list loopvisor gave the FUSE helper, by key
	write     map[string][]float64 // MB/s of writes (mount, write, umount), by set-up key and round
	untar     map[string][]float64 // ms to unpack the tree (mount, tar -x, umount), likewise
	block     int                  // block size of the read image
	// Memory touched after dropping the page cache, before each read.
	prefaultMiB int
}

var fuseOptRe = regexp.MustCompile(`options="?([^" ]*)"?`)

// readBlockSize is the block size of the image read, that of any ext4 image
// of 512 MiB or more. mkfs.ext4 would give the ~340 MiB image 1 KiB blocks,
// and fuse2fs reads a file one block (one pread(2)) at a time: that would
// measure a corner case.
const readBlockSize = 4096

// measureMount prepares the images, starts one probe per set-up and runs the
// cycle and read phases.
func measureMount(lv, dir, state string, c mountConfig) (*mountResults, error) {
	for _, tool := range []string{"mkfs.ext4", "fuse2fs", "unshare", "mount", "umount", "cp"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is not installed (make deps)", tool)
		}
	}
	probe, err := buildC(dir, "mountprobe", mountProbeSource)
	if err != nil {
		return nil, err
	}
	work := filepath.Join(dir, "mount")
	readMiB, err := prepareImages(work, c)
	if err != nil {
		return nil, err
	}

	sandbox := func(flags ...string) []string {
		argv := []string{lv, "run", "--uid-map", fmt.Sprintf("%d:65536", sandboxUID),
			"--state-dir", state, "--log-level", "info"}
		return append(append(argv, flags...), "--", probe)
	}
	setups := []mountSetup{
		{key: "host", label: "host root (own mount namespace: unshare -m)", argv: []string{"unshare", "--mount", "--propagation", "private", probe}},
		{key: "fuse", label: "loopvisor sandbox, FUSE (default)", argv: sandbox()},
		{key: "kernel", label: "loopvisor sandbox, --allow-kernel-mount ext4", argv: sandbox("--allow-kernel-mount", "ext4")},
	}
	for i := range setups {
		s := &setups[i]
		s.mnt, s.ram = "mnt-"+s.key, "ram-"+s.key
		for _, d := range []string{s.mnt, s.ram} {
			if err := mkdirOwned(filepath.Join(work, d)); err != nil {
				return nil, err
			}
		}
	}

	r := &mountResults{setups: setups, cycle: map[string][][]float64{}, read: map[string]map[string][]float64{}, helperCPU: map[string]map[string][]float64{},
		fstype: map[string]string{}, fuseOp: map[string]string{}, write: map[string][]float64{}, untar: map[string][]float64{}, block: readBlockSize, prefaultMiB: prefaultSize(c.readMiB)}
	probers := make([]*prober, len(setups))
	defer func() {
		for _, p := range probers {
			if p != nil {
				p.kill()
			}
		}
	}()
	for i, s := range setups {
		if probers[i], err = startProber(s.label, work, s.argv); err != nil {
			return nil, err
		}
	}

	// Cycles. The warm-up brings binaries, the image and loop devices in.
	cycleCmd := func(s mountSetup, n int) string { return fmt.Sprintf("cycle %d cycle.img %s", n, s.mnt) }
	for i, s := range setups {
		if _, err := probers[i].do(cycleCmd(s, 2)); err != nil {
			return nil, err
		}
	}
	for round := 0; round < c.rounds; round++ {
		for j := range setups {
			i := (round + j) % len(setups)
			s := setups[i]
			out, err := probers[i].do(cycleCmd(s, c.cycles))
			if err != nil {
				return nil, err
			}
			var ms []float64
			for _, l := range out {
				f := strings.Fields(l)
				var ns float64
				if len(f) == 2 && f[0] == "cycle" {
					ns, err = strconv.ParseFloat(f[1], 64)
				}
				if ns <= 0 || err != nil {
					return nil, fmt.Errorf("%s: unexpected output %q", s.label, l)
				}
				ms = append(ms, ns/1e6)
			}
			if len(ms) != c.cycles {
				return nil, fmt.Errorf("%s: %d cycles timed, want %d", s.label, len(ms), c.cycles)
			}
			r.cycle[s.key] = append(r.cycle[s.key], ms)
		}
	}

	// Each set-up copies the image into a tmpfs of its own (in its own
	// mount namespace: nothing to clean up on the host).
	// The write image (-write-mib and the unpacked tree fit in it) lives
	// there too.
	wImgMiB := c.writeMiB + c.writeMiB/8 + 96
	ramMiB := readMiB + 16 + wImgMiB
	for i, s := range setups {
		for _, cmd := range []string{
			fmt.Sprintf("exec mount -t tmpfs -o size=%dm,mode=0755 tmpfs %s", ramMiB, s.ram),
			fmt.Sprintf("exec cp read.img %s/read.img", s.ram),
			fmt.Sprintf("exec truncate -s %dM %s/w.img", wImgMiB, s.ram),
		} {
			if _, err := probers[i].do(cmd); err != nil {
				return nil, err
			}
		}
	}

	// Cold reads: mount read-only, drop the page cache (file, loop device
	// and backing file alike; a tmpfs stays), read, unmount. Round -1 is a
	// warm-up whose figures are dropped: the image was just written, and
	// the virtual disk below may still be busy with it or cache it.
	want := int64(c.readMiB) << 20
	for _, ph := range readPhases {
		r.read[ph.key] = map[string][]float64{}
		r.helperCPU[ph.key] = map[string][]float64{}
		for round := -1; round < c.readRounds; round++ {
			for j := range setups {
				i := (round + 1 + j) % len(setups)
				s, p := setups[i], probers[i]
				cr, err := coldRead(p, ph.img(s), s.mnt, want, r.prefaultMiB)
				if err != nil {
					return nil, err
				}
				r.fstype[s.key] = cr.fstype
				if round >= 0 {
					r.read[ph.key][s.key] = append(r.read[ph.key][s.key], cr.mbs)
					if cr.helpers > 0 {
						r.helperCPU[ph.key][s.key] = append(r.helperCPU[ph.key][s.key], cr.helperMS)
					}
				}
			}
		}
	}

	if c.writeRounds > 0 {
		setPhase("measuring FUSE writes and unpacking a tree")
		if err := measureWrites(r, setups, probers, c); err != nil {
			return nil, err
		}
	}

	for i, s := range setups {
		p := probers[i]
		if _, err := p.do("exec umount " + s.ram); err != nil {
			return nil, err
		}
		probers[i] = nil
		if err := p.stop(); err != nil {
			return nil, err
		}
		if m := fuseOptRe.FindStringSubmatch(p.stderr.String()); m != nil && strings.HasPrefix(s.key, "fuse") {
			r.fuseOp[s.key] = m[1]
		}
	}
	return r, nil
}

// measureWrites times, in every set-up and with a fresh ext4 file system in
// its tmpfs each time, a sequential write of c.writeMiB (mount, write,
// umount) and the unpacking of a tree of c.treeFiles small files with
// tar (mount, tar -x, umount). umount returns once everything is on the
// device (the kernel syncs; loopvisor waits until its FUSE helper has
// exited), so both include write-back. Round -1 is a warm-up.
func measureWrites(r *mountResults, setups []mountSetup, probers []*prober, c mountConfig) error {
	for round := -1; round < c.writeRounds; round++ {
		for j := range setups {
			i := (round + 1 + j) % len(setups)
			s, p := setups[i], probers[i]
			img := s.ram + "/w.img"
			// Inode tables and journal initialised now: with lazy init
			// the kernel zeroes them in the background after mounting
			// (ext4lazyinit), which made its writes 400 to 1,700 MB/s.
			mkfs := fmt.Sprintf("exec mkfs.ext4 -q -F -b %d -E lazy_itable_init=0,lazy_journal_init=0 %s", readBlockSize, img)
			if _, err := p.do(mkfs); err != nil {
				return err
			}
			prefault(r.prefaultMiB)
			out, err := p.do(fmt.Sprintf("write %s %s %d", img, s.mnt, c.writeMiB))
			if err != nil {
				return err
			}
			var f []string
			if len(out) == 1 {
				f = strings.Fields(out[0])
			}
			if len(f) != 3 || f[0] != "write" || f[1] != strconv.FormatInt(int64(c.writeMiB)<<20, 10) {
				return fmt.Errorf("%s: unexpected output %q", s.label, out)
			}
			ns, err := strconv.ParseFloat(f[2], 64)
			if err != nil || ns <= 0 {
				return fmt.Errorf("%s: unexpected output %q", s.label, out)
			}
			if _, err := p.do(mkfs); err != nil {
				return err
			}
			prefault(r.prefaultMiB)
			out, err = p.do(fmt.Sprintf("untar %s %s tree.tar", img, s.mnt))
			if err != nil {
				return err
			}
			f = nil
			if len(out) == 1 {
				f = strings.Fields(out[0])
			}
			var tns float64
			if len(f) == 2 && f[0] == "untar" {
				tns, err = strconv.ParseFloat(f[1], 64)
			}
			if err != nil || tns <= 0 {
				return fmt.Errorf("%s: unexpected output %q", s.label, out)
			}
			if round >= 0 {
				r.write[s.key] = append(r.write[s.key], float64(int64(c.writeMiB)<<20)/ns*1e3)
				r.untar[s.key] = append(r.untar[s.key], tns/1e6)
			}
		}
	}
	return nil
}

// writeTree writes a tar archive of files small files (100 per directory,
// 100 B to 8 KiB of pseudo-random bytes each): what an image builder
// unpacks.
func writeTree(path string, files int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{100, 500, 1000, 2000, 4000, 8000}
	buf := make([]byte, 8000)
	mtime := time.Unix(1700000000, 0)
	for i := 0; i < files && err == nil; i++ {
		dir := fmt.Sprintf("d%03d/", i/100)
		if i%100 == 0 {
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: mtime})
		}
		n := sizes[rng.IntN(len(sizes))]
		for j := 0; j < n; j++ {
			buf[j] = byte(rng.Uint32())
		}
		if err == nil {
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%sf%03d", dir, i%100), Mode: 0o644, Size: int64(n), ModTime: mtime})
		}
		if err == nil {
			_, err = tw.Write(buf[:n])
		}
	}
	if err == nil {
		err = tw.Close()
	}
	return errors.Join(err, f.Close())
}

// coldReadResult is one cold read.
type coldReadResult struct {
	mbs      float64 // MB/s (10^6 bytes/s)
	fstype   string  // type and source of what was mounted
	helperMS float64 // CPU time of the FUSE helper during the read
	helpers  int     // FUSE helper processes found
}

// coldRead mounts img read-only on mnt through p, drops the page cache,
// touches prefaultMiB of fresh memory, reads data.bin and unmounts.
func coldRead(p *prober, img, mnt string, want int64, prefaultMiB int) (*coldReadResult, error) {
	if _, err := p.do("exec mount -o loop,ro " + img + " " + mnt); err != nil {
		return nil, err
	}
	out, err := p.do("fstype " + mnt)
	if err != nil || len(out) != 1 {
		return nil, fmt.Errorf("%s: fstype: %w %q", p.label, err, out)
	}
	cr := &coldReadResult{fstype: strings.TrimPrefix(out[0], "fstype ")}
	if err := dropCaches(); err != nil {
		return nil, err
	}
	prefault(prefaultMiB)
	cpu0, _ := treeCPU(p.cmd.Process.Pid, helperComm)
	out, err = p.do("read " + mnt + "/data.bin")
	if err != nil {
		return nil, err
	}
	cpu1, n := treeCPU(p.cmd.Process.Pid, helperComm)
	cr.helperMS, cr.helpers = float64(cpu1-cpu0)*1000/userHZ, n
	var f []string
	if len(out) == 1 {
		f = strings.Fields(out[0])
	}
	if len(f) != 3 || f[0] != "read" {
		return nil, fmt.Errorf("%s: unexpected output %q", p.label, out)
	}
	size, err1 := strconv.ParseInt(f[1], 10, 64)
	ns, err2 := strconv.ParseFloat(f[2], 64)
	if err1 != nil || err2 != nil || ns <= 0 {
		return nil, fmt.Errorf("%s: unexpected output %q", p.label, out)
	}
	if size != want {
		return nil, fmt.Errorf("%s: read %d bytes of data.bin, want %d", p.label, size, want)
	}
	cr.mbs = float64(size) / ns * 1e3
	if _, err := p.do("exec umount " + mnt); err != nil {
		return nil, err
	}
	return cr, nil
}

// helperComm is the FUSE helper's process name.
const helperComm = "fuse2fs"

// userHZ is the unit of the CPU times in /proc/PID/stat.
const userHZ = 100

// treeCPU returns the CPU time (user + system, in clock ticks) of the
// processes named comm that descend from root, and how many there are.
func treeCPU(root int, comm string) (int64, int) {
	type proc struct {
		ppid  int
		comm  string
		ticks int64
	}
	procs := map[int]proc{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// PID (COMM) STATE PPID ... field 14 utime, 15 stime; COMM may
		// hold spaces and parentheses.
		lp, rp := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if lp < 0 || rp < lp {
			continue
		}
		f := strings.Fields(string(b[rp+1:]))
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		procs[pid] = proc{ppid, string(b[lp+1 : rp]), ut + st}
	}
	var ticks int64
	n := 0
	for pid, pr := range procs {
		if pr.comm != comm {
			continue
		}
		for a, depth := procs[pid].ppid, 0; a > 1 && depth < 64; a, depth = procs[a].ppid, depth+1 {
			if a == root {
				ticks += pr.ticks
				n++
				break
			}
		}
	}
	return ticks, n
}

// prepareImages makes, in a new directory work owned by the sandbox's root:
// cycle.img, an empty ext4 file system of c.imgMiB (mkfs.ext4 defaults), and
// read.img, an ext4 file system with readBlockSize blocks holding data.bin
// (c.readMiB of pseudo-random bytes), made with mkfs.ext4 -d so that nothing
// is mounted on the host. It returns the size of read.img in MiB.
func prepareImages(work string, c mountConfig) (int, error) {
	if err := mkdirOwned(work); err != nil {
		return 0, err
	}
	src := filepath.Join(filepath.Dir(work), "mount-src")
	if err := os.Mkdir(src, 0o755); err != nil {
		return 0, err
	}
	defer func() { _ = os.RemoveAll(src) }() // a scratch tree in the bench's own temporary directory
	if err := writeData(filepath.Join(src, "data.bin"), c.readMiB); err != nil {
		return 0, err
	}
	// Room for the file, the journal and the metadata.
	readMiB := c.readMiB + c.readMiB/16 + 48
	for _, img := range []struct {
		name string
		mib  int
		args []string
	}{
		{"cycle.img", c.imgMiB, nil},
		{"read.img", readMiB, []string{"-b", strconv.Itoa(readBlockSize), "-d", src}},
	} {
		p := filepath.Join(work, img.name)
		f, err := os.Create(p)
		if err != nil {
			return 0, err
		}
		if err := errors.Join(f.Truncate(int64(img.mib)<<20), f.Close()); err != nil {
			return 0, err
		}
		argv := append(append([]string{"-q", "-F"}, img.args...), p)
		if out, err := exec.Command("mkfs.ext4", argv...).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("mkfs.ext4 %s: %w\n%s", strings.Join(argv, " "), err, out)
		}
		if err := os.Chown(p, sandboxUID, sandboxUID); err != nil {
			return 0, err
		}
	}
	if c.writeRounds > 0 {
		if err := writeTree(filepath.Join(work, "tree.tar"), c.treeFiles); err != nil {
			return 0, err
		}
	}
	return readMiB, nil
}

// writeData writes mib MiB of pseudo-random bytes (mkfs.ext4 -d leaves
// blocks of zeros out as holes, which would not be read from the disk).
func writeData(path string, mib int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{'l', 'o', 'o', 'p', 'v', 'i', 's', 'o', 'r'})
	buf := make([]byte, 1<<20)
	for i := 0; i < mib; i++ {
		_, _ = rng.Read(buf)
		if _, err := f.Write(buf); err != nil {
			return errors.Join(err, f.Close())
		}
	}
	return f.Close()
}

func mkdirOwned(p string) error {
	if err := os.Mkdir(p, 0o755); err != nil {
		return err
	}
	return os.Chown(p, sandboxUID, sandboxUID)
}

// dropCaches writes back dirty data and drops the page cache, dentries and
// inodes (host root only).
func dropCaches() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("drop the page cache: %w", err)
	}
	return nil
}

// lockedBuffer is a bytes.Buffer that a command can write while the bench
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// prober is a running mountprobe.
type prober struct {
	label  string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stdout *os.File
	done   chan struct{} // closed once the probe has exited; then err is its Wait
	err    error
	stderr *lockedBuffer
}

func startProber(label, dir string, argv []string) (*prober, error) {
	p := &prober{label: label, lines: make(chan string, 256), done: make(chan struct{}), stderr: &lockedBuffer{}}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Dir = dir
	p.cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	// A pipe of our own rather than StdoutPipe: the probe's children (a
	// FUSE helper, a sandbox's processes) may keep its write end open
	// after the probe is gone, and the reader must not hold up Wait.
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p.stdout = r
	p.cmd.Stdout = w
	err = start(p.cmd)
	_ = w.Close() // the probe has its own copy, or failed to start
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// probeTimeout bounds one probe command.
const probeTimeout = 2 * time.Minute

// do sends one command and returns the lines it printed before "ok", or an
// error after probeTimeout.
func (p *prober) do(command string) ([]string, error) {
	if _, err := io.WriteString(p.stdin, command+"\n"); err != nil {
		return nil, fmt.Errorf("%s: %s: %w\n%s", p.label, command, err, p.stderr.String())
	}
	var out []string
	timer := time.NewTimer(probeTimeout)
	defer timer.Stop()
	for {
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s: %s: the probe exited: %w\n%s", p.label, command, p.err, p.stderr.String())
		case l, ok := <-p.lines:
			switch {
			case !ok:
				return nil, fmt.Errorf("%s: %s: the probe closed its output\n%s", p.label, command, p.stderr.String())
			case l == "ok":
				return out, nil
			case strings.HasPrefix(l, "err "):
				return nil, fmt.Errorf("%s: %s: %s\n%s", p.label, command, l[4:], p.stderr.String())
			}
			out = append(out, l)
		case <-timer.C:
			return nil, fmt.Errorf("%s: %s: timed out after %v\n%s", p.label, command, probeTimeout, p.stderr.String())
		}
	}
}

// stop ends the probe (EOF on stdin) and waits for it; a sandbox then
// releases its devices.
func (p *prober) stop() error {
	// A failed close shows as the probe not exiting at EOF.
	_ = p.stdin.Close()
	select {
	case <-p.done:
		_ = p.stdout.Close() // read to the end or abandoned: either way done with
		if p.err != nil {
			return fmt.Errorf("%s: %w\n%s", p.label, p.err, p.stderr.String())
		}
		return nil
	case <-time.After(30 * time.Second):
		p.kill()
		return fmt.Errorf("%s: did not exit at EOF\n%s", p.label, p.stderr.String())
	}
}

// kill ends the probe after a failure: EOF, then SIGTERM (loopvisor forwards
// it and releases its devices), then SIGKILL, waiting a bounded time after
// each; a probe that outlives all of that is reported and left behind.
//
// It is called after a failure that is already being reported: a failed
// close or signal shows as the probe not exiting.
func (p *prober) kill() {
	_ = p.stdin.Close()
	defer func() { _ = p.stdout.Close() }() // ends the reader, whoever holds the write end
	for _, sig := range []syscall.Signal{0, syscall.SIGTERM, syscall.SIGKILL} {
		if sig != 0 {
			_ = p.cmd.Process.Signal(sig)
		}
		select {
		case <-p.done:
			return
		case <-time.After(10 * time.Second):
		}
	}
	fmt.Fprintf(os.Stderr, "bench: %s (pid %d) did not exit after SIGKILL\n", p.label, p.cmd.Process.Pid)
}

// median returns the median of v.
func median(v []float64) float64 {
	return samples{"": v}.quantile("", 0.5)
}

// pairedRatio is the median over rounds of num[i]/den[i]: each round
// measures the set-ups back to back, so a slow phase of the machine
// (other work, the virtual disk) cancels out.
func pairedRatio(num, den []float64) float64 {
	var v []float64
	for i := range num {
		if i < len(den) && den[i] > 0 {
			v = append(v, num[i]/den[i])
		}
	}
	return median(v)
}

func reportMount(r *mountResults, c mountConfig) {
	fmt.Printf("mount -o loop IMG MNT + umount MNT of a %d MiB ext4 image (mkfs.ext4 defaults), util-linux; one process per set-up\n", c.imgMiB)
	fmt.Printf("timing itself, %d rounds x %d cycles after 2 warm-up cycles; ratios: median over rounds of the round's median / host's\n", c.rounds, c.cycles)
	fmt.Printf("  %-56s %8s  %-20s %s\n", "", "ms/cycle", "median [p25..p75]", "/ host")
	perRound := map[string][]float64{}
	for _, s := range r.setups {
		all := samples{}
		for _, round := range r.cycle[s.key] {
			perRound[s.key] = append(perRound[s.key], median(round))
			all[""] = append(all[""], round...)
		}
		fmt.Printf("  %-56s %8.1f  %-20s %6.2f\n", s.label, all.quantile("", 0.5),
			fmt.Sprintf("[%.1f..%.1f]", all.quantile("", 0.25), all.quantile("", 0.75)), pairedRatio(perRound[s.key], perRound["host"]))
	}
	ratio := pairedRatio(perRound["kernel"], perRound["host"])
	fratio := pairedRatio(perRound["fuse"], perRound["host"])
	fmt.Printf("\n  ratio kernel-mount sandbox / host per cycle: %5.2f   target <= %.1f: %s\n", ratio, targetCycleRatio, metIf(ratio <= targetCycleRatio))
	fmt.Printf("  ratio FUSE sandbox / host per cycle:         %5.2f   target <= %.1f: %s\n\n", fratio, targetFuseCycleRatio, metIf(fratio <= targetFuseCycleRatio))

	fmt.Printf("sequential read of a %d MiB file (read(2), 1 MiB buffer) on ext4 with %d-byte blocks, mounted -o loop,ro;\n", c.readMiB, r.block)
	fmt.Printf("page cache dropped (echo 3 > /proc/sys/vm/drop_caches), then %d MiB of fresh memory touched and freed, before each read;\n", r.prefaultMiB)
	fmt.Printf("%d rounds after a warm-up round; ", c.readRounds)
	fmt.Printf("ratios: median over rounds of the set-up's MB/s / the kernel mount's in the same round\n")
	for _, ph := range readPhases {
		rd := r.read[ph.key]
		fmt.Printf("  %s\n", ph.label)
		fmt.Printf("    %-54s %8s  %-20s %8s  %s\n", "", "MB/s", "median [min..max]", "/ kernel", "FUSE helper CPU ms per read")
		for _, s := range r.setups {
			v := samples{"": rd[s.key]}
			cpu := ""
			if h := r.helperCPU[ph.key][s.key]; len(h) > 0 {
				cpu = fmt.Sprintf("%.0f", median(h))
			}
			fmt.Printf("    %-54s %8.0f  %-20s %8.2f  %s\n", s.label, v.quantile("", 0.5),
				fmt.Sprintf("[%.0f..%.0f]", v.quantile("", 0), v.quantile("", 1)), pairedRatio(rd[s.key], rd["kernel"]), cpu)
		}
		fuse := pairedRatio(rd["fuse"], rd["kernel"])
		best := samples{"": rd["fuse"]}.quantile("", 1) / samples{"": rd["kernel"]}.quantile("", 1)
		target := targetReadRatio
		if ph.key == "ram" {
			target = targetRAMReadRatio
		}
		fmt.Printf("    ratio FUSE / kernel mount (both in the sandbox): %5.2f   target >= %.2f: %s   (best / best: %.2f)\n\n",
			fuse, target, metBoth(fuse >= target, best >= target), best)
	}
	if len(r.write) > 0 {
		fmt.Printf("write and unpack, image file in a tmpfs of each set-up's own, a fresh ext4 (4 KiB blocks) each time; %d rounds after a warm-up;\n", c.writeRounds)
		fmt.Printf("timed from mount to umount returning (data on the device: the kernel syncs, the FUSE helper has exited); ratios: median over rounds, same round\n")
		fmt.Printf("    %-54s %8s  %-16s %8s  %10s  %-18s %8s\n", "", "write", "", "", "unpack", "", "")
		fmt.Printf("    %-54s %8s  %-16s %8s  %10s  %-18s %8s\n", "", "MB/s", "[min..max]", "/ kernel", "ms", "[min..max]", "/ kernel")
		for _, s := range r.setups {
			w, u := samples{"": r.write[s.key]}, samples{"": r.untar[s.key]}
			fmt.Printf("    %-54s %8.0f  %-16s %8.2f  %10.0f  %-18s %8.2f\n", s.label, w.quantile("", 0.5),
				fmt.Sprintf("[%.0f..%.0f]", w.quantile("", 0), w.quantile("", 1)), pairedRatio(r.write[s.key], r.write["kernel"]),
				u.quantile("", 0.5), fmt.Sprintf("[%.0f..%.0f]", u.quantile("", 0), u.quantile("", 1)), pairedRatio(r.untar[s.key], r.untar["kernel"]))
		}
		wr, ur := pairedRatio(r.write["fuse"], r.write["kernel"]), pairedRatio(r.untar["fuse"], r.untar["kernel"])
		// Other work only ever slows a round down: best against best
		// shows what each path can do.
		wbest := samples{"": r.write["fuse"]}.quantile("", 1) / samples{"": r.write["kernel"]}.quantile("", 1)
		ubest := samples{"": r.untar["fuse"]}.quantile("", 0) / samples{"": r.untar["kernel"]}.quantile("", 0)
		fmt.Printf("    ratio FUSE / kernel mount, sequential write of %d MiB (MB/s): %5.2f   target >= %.2f: %s   (best / best: %.2f)\n", c.writeMiB, wr, targetWriteRatio, metBoth(wr >= targetWriteRatio, wbest >= targetWriteRatio), wbest)
		fmt.Printf("    ratio FUSE / kernel mount, unpacking %d files (time):      %5.2f   target <= %.2f: %s   (best / best: %.2f)\n\n", c.treeFiles, ur, targetUntarRatio, metBoth(ur <= targetUntarRatio, ubest <= targetUntarRatio), ubest)
	}
	fmt.Printf("  mounted as:")
	for _, s := range r.setups {
		fmt.Printf(" %s %s;", s.key, r.fstype[s.key])
	}
	fmt.Println()
	for _, s := range r.setups {
		if o := r.fuseOp[s.key]; o != "" {
			fmt.Printf("  options loopvisor gave the FUSE helper (%s): -o %s\n", s.key, o)
		}
	}
	fmt.Println()
}

// metBoth is the verdict for a ratio of throughputs that other work on the
// machine moves: met only when the median of the paired rounds and best
// against best both meet the target. Other work only ever slows a round
// down, so a median that meets it while best/best does not means the
// compared side was slowed (a kernel mount's writes vary 4x here), not
// that the target is met.
func metBoth(median, best bool) string {
	switch {
	case median && best:
		return "met"
	case median:
		return "NOT met (the median only: best / best does not)"
	case best:
		return "NOT met (best / best only: the median does not)"
	}
	return "NOT met"
}

func metIf(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// prefaultSize is how much memory to touch before a cold read of a file of
// readMiB: enough for every page cache the read fills (FUSE file, loop
// device, backing file) and some, at most half of what is available.
func prefaultSize(readMiB int) int {
	want := 3*readMiB + 128
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "MemAvailable:" {
			kib, _ := strconv.Atoi(f[1])
			return min(want, kib/1024/2)
		}
	}
	return 0
}

// prefault touches mib MiB of fresh anonymous memory and frees it again, so
// the read that follows gets pages the machine has just used. In a virtual
// machine with free page reporting (virtio-balloon), pages freed some
// seconds ago have been handed back to the hypervisor, and the first touch
// of each costs a fault in the host: dropping the page cache and reading at
// once made the figures vary by up to 8x from read to read.
func prefault(mib int) {
	if mib <= 0 {
		return
	}
	b, err := unix.Mmap(-1, 0, mib<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return
	}
	_ = unix.Munmap(b)
}
