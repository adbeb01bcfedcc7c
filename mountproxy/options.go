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
	// noatime and nodiratime are the mount's own attributes (fuseAttrs):
	// the mount is loopvisor's, and libfuse refuses "nodiratime".
	{unix.MS_RDONLY, "ro"}, {unix.MS_NOEXEC, "noexec"},
	{unix.MS_SYNCHRONOUS, "sync"}, {unix.MS_DIRSYNC, "dirsync"},
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

// Kernel mounts: file system options are an allow-list per type.
//
// A kernel mount is made by host root (fsopen in the supervisor), so every
// option is parsed with host root's privileges and in the host's view. The
// lists hold the options that only tune how the kernel treats the image the
// sandbox owns. Left out on purpose, whatever the type:
//   - anything that names a host object, looked up as host root: paths and
//     device numbers (ext4 journal_path=, journal_dev=; xfs logdev=, rtdev=;
//     btrfs and erofs device=), fscache ids (erofs fsid=, domain_id=), NLS
//     module names (iocharset= other than utf8, codepage=: request_module);
//   - ids, which the kernel reads in the supervisor's user namespace, not
//     the sandbox's (ext4 resuid=/resgid=, fat and iso9660 uid=/gid=);
//   - host-wide failure modes and debugging: errors=panic (the sandbox owns
//     the backing file and can corrupt it under the mount), btrfs
//     fatal_errors=, ext4 warn_on_error (a WARN panics a panic_on_warn
//     host), abort, debug, test_dummy_encryption, fc_debug_*, check_int*,
//     ref_verify, enospc_debug, fragment=;
//   - dax (needs a DAX device, not a loop device), inlinecrypt, journaled
//     quota files (usrjquota=, grpjquota=, jqfmt=).
//
// An entry is a flag ("acl"), a name taking any value ("commit=") for the
// kernel's own parser to check, or one exact value ("errors=continue").
// Per-mount flags travel as MS_* bits (mount(2)) and are not options; in
// the data string the kernel refuses them as unknown parameters, and so
// does the allow-list. A type loopvisor has no list for gets only the
// generic superblock options.
var kernelOptionsGeneric = []string{"ro", "rw", "sync", "async", "dirsync", "lazytime", "nolazytime"}

// kernelOptionsExt serves ext2, ext3 and ext4 (one driver on most kernels).
// Some entries exist only in some drivers or configurations (noacl in
// ext2's own driver; squashfs threads= with
// CONFIG_SQUASHFS_CHOICE_DECOMP_BY_MOUNT): the kernel refuses them itself
// where they do not, with the same EINVAL. Checked against 6.18 here: every
// other ext4 and squashfs entry mounts (journal_async_commit and prjquota
// only where the image allows them).
var kernelOptionsExt = []string{
	"acl", "noacl", "user_xattr",
	"barrier", "barrier=", "nobarrier",
	"commit=", "min_batch_time=", "max_batch_time=",
	"data=journal", "data=ordered", "data=writeback", "data_err=abort", "data_err=ignore",
	"errors=continue", "errors=remount-ro",
	"journal_checksum", "nojournal_checksum", "journal_async_commit", "journal_ioprio=",
	"norecovery", "noload", "sb=",
	"delalloc", "nodelalloc", "auto_da_alloc", "auto_da_alloc=", "noauto_da_alloc",
	"dioread_nolock", "nodioread_nolock", "dioread_lock",
	"discard", "nodiscard", "block_validity", "noblock_validity",
	"init_itable", "init_itable=", "noinit_itable", "inode_readahead_blks=", "stripe=",
	"max_dir_size_kb=", "mb_optimize_scan=", "nombcache", "no_mbcache",
	"prefetch_block_bitmaps", "no_prefetch_block_bitmaps", "nowarn_on_error",
	"grpid", "bsdgroups", "nogrpid", "sysvgroups", "bsddf", "minixdf", "nouid32",
	"quota", "noquota", "usrquota", "grpquota", "prjquota",
}

var kernelOptions = map[string][]string{
	"ext2": kernelOptionsExt, "ext3": kernelOptionsExt, "ext4": kernelOptionsExt,
	"squashfs": {"errors=continue", "threads="},
	"erofs": {"user_xattr", "nouser_xattr", "acl", "noacl", "cache_strategy=disabled",
		"cache_strategy=readahead", "cache_strategy=readaround", "directio", "fsoffset="},
	"xfs": {"allocsize=", "attr2", "noattr2", "discard", "nodiscard", "grpid", "bsdgroups",
		"nogrpid", "sysvgroups", "filestreams", "ikeep", "noikeep", "inode32", "inode64",
		"largeio", "nolargeio", "logbufs=", "logbsize=", "noalign", "norecovery", "nouuid",
		"noquota", "quota", "usrquota", "uquota", "uqnoenforce", "qnoenforce", "grpquota",
		"gquota", "gqnoenforce", "prjquota", "pquota", "pqnoenforce", "swalloc", "sunit=",
		"swidth=", "wsync"},
	"btrfs": {"acl", "noacl", "autodefrag", "noautodefrag", "barrier", "nobarrier", "commit=",
		"compress", "compress=", "compress-force", "compress-force=", "datacow", "nodatacow",
		"datasum", "nodatasum", "degraded", "discard", "discard=sync", "discard=async",
		"nodiscard", "flushoncommit", "noflushoncommit", "max_inline=", "metadata_ratio=",
		"rescue=", "usebackuproot", "nologreplay", "skip_balance", "space_cache",
		"space_cache=v1", "space_cache=v2", "nospace_cache", "clear_cache", "ssd",
		"ssd_spread", "nossd", "nossd_spread", "subvol=", "subvolid=", "thread_pool=",
		"treelog", "notreelog", "user_subvol_rm_allowed"},
	"vfat": {"quiet", "showexec", "sys_immutable", "flush", "rodir", "uni_xlate", "nonumtail",
		"utf8", "usefree", "tz=UTC", "time_offset=", "umask=", "dmask=", "fmask=",
		"allow_utime=", "shortname=lower", "shortname=win95", "shortname=winnt",
		"shortname=mixed", "errors=continue", "errors=remount-ro", "discard",
		"dos1xfloppy", "iocharset=utf8", "check=relaxed", "check=normal", "check=strict"},
	"iso9660": {"norock", "nojoliet", "check=relaxed", "check=strict", "map=off", "map=normal",
		"map=acorn", "mode=", "dmode=", "unhide", "hide", "showassoc", "block=", "session=",
		"sbsector=", "cruft", "utf8", "iocharset=utf8", "overriderockperm"},
}

// kernelDefaults are options added unless the caller chose that setting:
// ext2/3/4 read their default error behaviour from the superblock, which
// the sandbox writes (tune2fs -e panic), so a kernel mount always says it.
var kernelDefaults = map[string]struct{ name, opt string }{
	"ext2": {"errors", "errors=remount-ro"}, "ext3": {"errors", "errors=remount-ro"},
	"ext4": {"errors", "errors=remount-ro"},
}

// OptionError names a file system option a kernel mount refuses.
type OptionError struct {
	FSType string
	Option string
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("option %q is not allowed for a kernel mount of %s", e.Option, e.FSType)
}

// Unwrap makes errors.Is(err, unix.EINVAL) hold: the kernel's errno for an
// unknown or bad option.
func (e *OptionError) Unwrap() error { return unix.EINVAL }

// allowedKernelOption reports whether opt is on fstype's allow-list.
func allowedKernelOption(fstype, opt string) bool {
	name, _, hasVal := strings.Cut(opt, "=")
	for _, list := range [][]string{kernelOptionsGeneric, kernelOptions[fstype]} {
		for _, a := range list {
			switch {
			case a == opt:
				return true
			case hasVal && strings.HasSuffix(a, "=") && a == name+"=":
				return true
			}
		}
	}
	return false
}

// KernelOptions checks the options of a kernel mount of fstype against its
// allow-list and returns them with the type's safe defaults added, or an
// *OptionError naming the first option refused.
func KernelOptions(fstype string, data []string) ([]string, error) {
	out := make([]string, 0, len(data)+1)
	for _, o := range data {
		if !allowedKernelOption(fstype, o) {
			return nil, &OptionError{FSType: fstype, Option: o}
		}
		out = append(out, o)
	}
	if d, ok := kernelDefaults[fstype]; ok {
		chosen := false
		for _, o := range data {
			if name, _, _ := strings.Cut(o, "="); name == d.name {
				chosen = true
			}
		}
		if !chosen {
			out = append(out, d.opt)
		}
	}
	return out, nil
}
