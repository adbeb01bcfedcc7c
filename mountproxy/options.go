package mountproxy

import (
	"fmt"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount flags (include/uapi/linux/mount.h).
const (
	msMgcVal = 0xC0ED0000
	msMgcMsk = 0xffff0000
)

var flagNames = []struct {
	bit  uint64
	name string
}{
	{unix.MS_RDONLY, "MS_RDONLY"}, {unix.MS_NOSUID, "MS_NOSUID"}, {unix.MS_NODEV, "MS_NODEV"},
	{unix.MS_NOEXEC, "MS_NOEXEC"}, {unix.MS_SYNCHRONOUS, "MS_SYNCHRONOUS"}, {unix.MS_REMOUNT, "MS_REMOUNT"},
	{unix.MS_MANDLOCK, "MS_MANDLOCK"}, {unix.MS_DIRSYNC, "MS_DIRSYNC"}, {unix.MS_NOSYMFOLLOW, "MS_NOSYMFOLLOW"},
	{unix.MS_NOATIME, "MS_NOATIME"}, {unix.MS_NODIRATIME, "MS_NODIRATIME"}, {unix.MS_BIND, "MS_BIND"},
	{unix.MS_MOVE, "MS_MOVE"}, {unix.MS_REC, "MS_REC"}, {unix.MS_SILENT, "MS_SILENT"},
	{unix.MS_POSIXACL, "MS_POSIXACL"}, {unix.MS_UNBINDABLE, "MS_UNBINDABLE"}, {unix.MS_PRIVATE, "MS_PRIVATE"},
	{unix.MS_SLAVE, "MS_SLAVE"}, {unix.MS_SHARED, "MS_SHARED"}, {unix.MS_RELATIME, "MS_RELATIME"},
	{unix.MS_I_VERSION, "MS_I_VERSION"}, {unix.MS_STRICTATIME, "MS_STRICTATIME"}, {unix.MS_LAZYTIME, "MS_LAZYTIME"},
}

// FlagString prints mount flags by name.
func FlagString(flags uint64) string {
	var out []string
	for _, f := range flagNames {
		if flags&f.bit != 0 {
			out = append(out, f.name)
			flags &^= f.bit
		}
	}
	if flags != 0 {
		out = append(out, fmt.Sprintf("%#x", flags))
	}
	if len(out) == 0 {
		return "0"
	}
	return strings.Join(out, "|")
}

// CleanFlags drops MS_MGC_VAL as the kernel does.
func CleanFlags(flags uint64) uint64 {
	if flags&msMgcMsk == msMgcVal {
		flags &^= msMgcMsk
	}
	return flags & 0xffffffff
}

// isNewMount reports whether flags ask for a new mount (not a remount,
// bind, move or propagation change).
func isNewMount(flags uint64) bool {
	return flags&(unix.MS_REMOUNT|unix.MS_BIND|unix.MS_MOVE|unix.MS_SHARED|unix.MS_PRIVATE|unix.MS_SLAVE|unix.MS_UNBINDABLE) == 0
}

// ParseData splits a mount(2) data string into options. It is a decoder of
// container memory: any byte sequence must be handled.
func ParseData(data string) []string {
	var out []string
	for _, o := range strings.Split(data, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}

// fuseFlagOptions are the MS_* flags every FUSE helper honours through
// libfuse, with the -o option that asks for them.
var fuseFlagOptions = []struct {
	bit uint64
	opt string
}{
	{unix.MS_RDONLY, "ro"}, {unix.MS_NOEXEC, "noexec"}, {unix.MS_NOATIME, "noatime"},
	{unix.MS_NODIRATIME, "nodiratime"}, {unix.MS_SYNCHRONOUS, "sync"}, {unix.MS_DIRSYNC, "dirsync"},
}

// helperOptions lists the file system options each helper understands: a
// whole option ("errors=panic") or a name that takes any value ("offset").
var helperOptions = map[string]map[string]bool{
	"fuse2fs":    {"ro": true, "rw": true, "errors=panic": true, "minixdf": true, "norecovery": true, "offset": true},
	"squashfuse": {"ro": true, "offset": true},
	"fusefat":    {"ro": true, "rw": true, "rw+": true},
}

// helperExtra are options a helper needs to behave as a kernel mount would.
var helperExtra = map[string][]string{
	"fuse2fs": {"nonempty"},
	"fusefat": {"nonempty"},
}

// fuseOptions builds the -o list for helper from mount flags and data, or
// explains which option the helper cannot honour.
func fuseOptions(helper string, flags uint64, data []string) (string, error) {
	opts := []string{"nosuid", "nodev", "allow_other", "default_permissions"}
	// The kernel mounts on non-empty directories; libfuse2 refuses unless
	// told (libfuse3 always allows it and rejects the option).
	opts = append(opts, helperExtra[baseName(helper)]...)
	for _, f := range fuseFlagOptions {
		if flags&f.bit != 0 {
			opts = append(opts, f.opt)
		}
	}
	// fusefat mounts read-only unless asked for its (experimental) write
	// mode; a kernel vfat mount is writable by default.
	if baseName(helper) == "fusefat" && flags&unix.MS_RDONLY == 0 {
		opts = append(opts, "rw+")
	}
	if flags&unix.MS_MANDLOCK != 0 {
		return "", fmt.Errorf("%s cannot honour MS_MANDLOCK", helper)
	}
	known := helperOptions[baseName(helper)]
	var bad []string
	for _, o := range data {
		name, _, _ := strings.Cut(o, "=")
		switch {
		case name == "noload" && baseName(helper) == "fuse2fs":
			opts = append(opts, "norecovery") // ext4's synonym
		case known != nil && (known[o] || known[name]):
			opts = append(opts, o)
		case known == nil:
			opts = append(opts, o) // a helper loopvisor does not know: pass everything
		default:
			bad = append(bad, o)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return "", fmt.Errorf("%s cannot honour %s", helper, strings.Join(bad, ","))
	}
	return strings.Join(opts, ","), nil
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}
