package mountproxy

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"
)

// Policy says how loopvisor serves a mount of an instance's loop device.
type Policy struct {
	// Fuse maps a file system type to the FUSE helper that serves it.
	Fuse map[string]string
	// Kernel lists the types mounted by the kernel on the sandbox's behalf.
	Kernel map[string]bool
	// Timeout bounds how long a FUSE helper may take to come up.
	Timeout time.Duration
	// CacheDir, if set, is a directory only host root can write (the
	// state dir) where the list of files a helper's jail holds is cached
	// across supervisor processes.
	CacheDir string
	// MaxHelpers bounds the FUSE helpers of one instance, running or
	// starting (each FUSE mount has one). A mount beyond it fails with
	// ENOSPC, as mount(2) does when a mount namespace reaches
	// fs.mount-max. 0 means DefaultMaxHelpers.
	MaxHelpers int
	// NewAPI serves fsopen, fsconfig and fsmount of FUSE-served types
	// (newapi.go); the filter must trap all three. Without it fsopen of
	// a served type answers ENOSYS and libmount falls back to mount(2).
	// It also serves fspick of loopvisor's mounts (fspick.go) where the
	// filter traps fspick; where it does not, fspick is the kernel's.
	NewAPI bool
}

// DefaultMaxHelpers is MaxHelpers when not set (--max-fuse).
const DefaultMaxHelpers = 16

// Packages names the Debian package of each known helper, for error
// messages.
var Packages = map[string]string{
	"fuse2fs": "fuse2fs", "squashfuse": "squashfuse", "fusefat": "fusefat",
}

// DefaultPolicy serves ext2/3/4 with fuse2fs, squashfs with squashfuse and
// vfat with fusefat.
func DefaultPolicy() Policy {
	return Policy{
		Fuse: map[string]string{
			"ext2": "fuse2fs", "ext3": "fuse2fs", "ext4": "fuse2fs",
			"squashfs": "squashfuse",
			// Many kernels (this project's CI among them) have no vfat.
			"vfat": "fusefat",
		},
		Kernel:     map[string]bool{},
		Timeout:    10 * time.Second,
		MaxHelpers: DefaultMaxHelpers,
	}
}

// AddFuse parses a --fuse TYPE=HELPER flag.
func (p *Policy) AddFuse(s string) error {
	typ, helper, ok := strings.Cut(s, "=")
	if !ok || typ == "" || helper == "" || strings.ContainsAny(typ, " ,/") {
		return fmt.Errorf("--fuse %q: want FSTYPE=HELPER, e.g. vfat=fusefat", s)
	}
	p.Fuse[typ] = helper
	return nil
}

// AllowKernel parses an --allow-kernel-mount TYPE[,TYPE] flag.
func (p *Policy) AllowKernel(s string) error {
	for _, t := range strings.Split(s, ",") {
		t = strings.TrimSpace(t)
		if t == "" || strings.ContainsAny(t, " /=") {
			return fmt.Errorf("--allow-kernel-mount %q: want FSTYPE[,FSTYPE...]", s)
		}
		p.Kernel[t] = true
	}
	return nil
}

// Resolve finishes a policy built from flags: a type named by
// --allow-kernel-mount is no longer served by its default helper, but a
// type given both explicitly (--fuse and --allow-kernel-mount) is an error.
func (p *Policy) Resolve(explicitFuse map[string]bool) error {
	var both []string
	for t := range p.Kernel {
		if explicitFuse[t] {
			both = append(both, t)
		}
		delete(p.Fuse, t)
	}
	if len(both) > 0 {
		sort.Strings(both)
		return fmt.Errorf("file system type %s is both in --fuse and in --allow-kernel-mount; choose one", strings.Join(both, ", "))
	}
	if p.Timeout <= 0 {
		p.Timeout = 10 * time.Second
	}
	return nil
}

// Serves reports whether loopvisor serves mounts of type fstype.
func (p *Policy) Serves(fstype string) bool {
	_, fuse := p.Fuse[fstype]
	return fuse || p.Kernel[fstype]
}

// HelperPath finds the host binary of helper, or says which package to
// install.
func HelperPath(helper string) (string, error) {
	if strings.HasPrefix(helper, "/") {
		if _, err := os.Stat(helper); err != nil {
			return "", fmt.Errorf("FUSE helper %s: %w", helper, err)
		}
		return helper, nil
	}
	p, err := exec.LookPath(helper)
	if err != nil {
		pkg := Packages[helper]
		if pkg == "" {
			pkg = "the package that ships " + helper
		}
		return "", fmt.Errorf("FUSE helper %s not found on the host: install %s (apt-get install %s)", helper, helper, pkg)
	}
	return p, nil
}
