package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// The id mapping every bundle gets: container ids 0..IDMapSize-1 are host
// ids HostID..HostID+IDMapSize-1, so the container's root is an
// unprivileged host uid (as in loopvisor run's default).
const (
	HostID    = 100000
	IDMapSize = 65536
)

// Spec is a config.json decoded into generic values (objects are
// map[string]any, arrays []any, numbers json.Number), so that fields this
// package does not know survive an edit.
type Spec map[string]any

// obj returns the object at the dotted path, creating missing objects.
func (s Spec) obj(path string) map[string]any {
	m := map[string]any(s)
	if path == "" {
		return m
	}
	for _, k := range strings.Split(path, ".") {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	return m
}

// Set sets the value at a dotted path such as "process.terminal", creating
// the objects on the way. v is stored as its JSON round trip, so typed
// structs become generic values too.
func (s Spec) Set(path string, v any) {
	parent, key := "", path
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		parent, key = path[:i], path[i+1:]
	}
	s.obj(parent)[key] = generic(v)
}

// Get returns the value at a dotted path, or nil.
func (s Spec) Get(path string) any {
	var cur any = map[string]any(s)
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// Delete removes the value at a dotted path if it is there.
func (s Spec) Delete(path string) {
	m := map[string]any(s)
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		var ok bool
		if m, ok = s.Get(path[:i]).(map[string]any); !ok {
			return
		}
		path = path[i+1:]
	}
	delete(m, path)
}

func generic(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("oci: %T is not JSON: %v", v, err))
	}
	g, err := decode(b)
	if err != nil {
		panic(err)
	}
	return g
}

// decode decodes JSON into generic values, numbers as json.Number so that
// 64-bit values (seccomp arguments) survive exactly.
func decode(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// Bundle is an OCI bundle directory: Dir/config.json and Dir/rootfs.
type Bundle struct {
	Dir    string
	Rootfs string
	Spec   Spec
}

// NewBundle creates dir (0755) with a rootfs built by BuildRootfs (Binaries
// plus extra) and a config.json made by `runc spec` and edited for a user
// namespace container that can run under runc and crun as host root:
//
//   - process.args = args, terminal false, cwd /, env PATH as in runc spec;
//   - root.path "rootfs", root.readonly false;
//   - a user namespace added to runc spec's pid, network, ipc, uts and
//     mount namespaces, with uidMappings and gidMappings
//     {containerID 0, hostID HostID, size IDMapSize};
//   - the capabilities of runc spec (AUDIT_WRITE, KILL, NET_BIND_SERVICE)
//     unless changed with SetCapabilities;
//   - everything else (mounts, masked and read-only paths, the devices
//     cgroup rule "deny all") as runc spec writes it.
//
// Call Save after further edits. dir must be reachable by the container's
// root (CheckReachable): a t.TempDir() is not, /tmp/name-XXXX made 0755 is.
func NewBundle(dir string, args []string, extra ...string) (*Bundle, error) {
	b, err := newBundle(dir)
	if err != nil {
		return nil, err
	}
	if err := BuildRootfs(b.Rootfs, extra...); err != nil {
		return nil, err
	}
	return b, b.writeDefaultSpec(args)
}

// newBundle makes dir, 0755 and reachable by the container's root, for a
// bundle with its rootfs in dir/rootfs.
func newBundle(dir string) (*Bundle, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	if err := CheckReachable(dir); err != nil {
		return nil, err
	}
	return &Bundle{Dir: dir, Rootfs: filepath.Join(dir, "rootfs")}, nil
}

// writeDefaultSpec gives b the config.json of `runc spec` running args, on
// its rootfs, in a user namespace mapping root to HostID, and saves it.
func (b *Bundle) writeDefaultSpec(args []string) error {
	spec, err := DefaultSpec()
	if err != nil {
		return err
	}
	b.Spec = spec
	b.Spec.Set("process.terminal", false)
	b.SetArgs(args...)
	b.Spec.Set("root", map[string]any{"path": "rootfs", "readonly": false})
	b.SetUserNS(HostID, IDMapSize)
	return b.Save()
}

// DefaultSpec returns the config.json that `runc spec` writes (runc
// 1.1.5: ociVersion 1.0.2-dev, terminal true, args [sh], pid, network, ipc,
// uts and mount namespaces, /proc, /dev tmpfs, devpts, shm, mqueue, sysfs
// and cgroup mounts, devices "deny all").
func DefaultSpec() (_ Spec, err error) {
	tmp, err := os.MkdirTemp("", "oci-spec-")
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(tmp)) }()
	if out, err := exec.Command("runc", "spec", "--bundle", tmp).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("oci: runc spec: %w: %s", err, bytes.TrimSpace(out))
	}
	data, err := os.ReadFile(filepath.Join(tmp, "config.json"))
	if err != nil {
		return nil, err
	}
	return ParseSpec(data)
}

// ParseSpec decodes a config.json (numbers as json.Number).
func ParseSpec(data []byte) (Spec, error) {
	v, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("oci: bad config.json: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("oci: config.json is not an object")
	}
	return Spec(m), nil
}

// Save writes b.Spec to Dir/config.json.
func (b *Bundle) Save() error {
	data, err := json.MarshalIndent(b.Spec, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(b.Dir, "config.json"), append(data, '\n'), 0o644)
}

// SetArgs sets process.args.
func (b *Bundle) SetArgs(args ...string) { b.Spec.Set("process.args", args) }

// SetUserNS makes sure the namespace list has a user namespace and maps
// container uids and gids 0..size-1 to host ids hostID..hostID+size-1.
func (b *Bundle) SetUserNS(hostID, size int) {
	b.AddNamespace("user", "")
	m := []map[string]any{{"containerID": 0, "hostID": hostID, "size": size}}
	b.Spec.Set("linux.uidMappings", m)
	b.Spec.Set("linux.gidMappings", m)
}

// AddNamespace adds a namespace of type typ (with path, if not empty) to
// linux.namespaces, replacing one of the same type.
func (b *Bundle) AddNamespace(typ, path string) {
	nss, _ := b.Spec.Get("linux.namespaces").([]any)
	out := nss[:0:0]
	for _, ns := range nss {
		if m, ok := ns.(map[string]any); ok && m["type"] == typ {
			continue
		}
		out = append(out, ns)
	}
	ns := map[string]any{"type": typ}
	if path != "" {
		ns["path"] = path
	}
	b.Spec.Set("linux.namespaces", append(out, ns))
}

// AllCapabilities are the capabilities a "privileged" userns container
// gets; they count only within its user namespace.
var AllCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
}

// SetCapabilities sets the bounding, effective, permitted and inheritable
// sets to caps and clears the ambient set. runc spec's default (three
// capabilities) has no CAP_SYS_ADMIN, so the container's root then fails
// the checks that loopvisor makes for the loop driver's CAP_SYS_ADMIN
// commands and cannot mount.
func (b *Bundle) SetCapabilities(caps ...string) {
	c := append([]string{}, caps...)
	b.Spec.Set("process.capabilities", map[string]any{
		"bounding": c, "effective": c, "permitted": c, "inheritable": c,
	})
}

// AllowDevice appends a devices cgroup rule allowing access ("rwm" or a
// subset) to devices of type typ ("b", "c" or "a") with the given major
// and minor number (-1 for any). runc spec denies every device and runc
// adds only its defaults (null, zero, full, random, urandom, tty, ptmx,
// pts); in a cgroup v1 devices controller that rule also applies to nodes
// bind-mounted in later, such as loopvisor's /dev/loop-control and
// /dev/loopN.
func (b *Bundle) AllowDevice(typ string, major, minor int64, access string) {
	rule := map[string]any{"allow": true, "type": typ, "access": access}
	if major >= 0 {
		rule["major"] = major
	}
	if minor >= 0 {
		rule["minor"] = minor
	}
	devs, _ := b.Spec.Get("linux.resources.devices").([]any)
	b.Spec.Set("linux.resources.devices", append(devs, rule))
}

// AllowLoopDevices allows /dev/loop-control (c 10:237), every /dev/loopN
// (b 7:*) and extended-minor partitions (b 259:*) in the devices cgroup.
func (b *Bundle) AllowLoopDevices() {
	b.AllowDevice("c", 10, 237, "rwm")
	b.AllowDevice("b", 7, -1, "rwm")
	b.AllowDevice("b", 259, -1, "rwm")
}

// SetSeccomp sets linux.seccomp.
func (b *Bundle) SetSeccomp(s *Seccomp) {
	if s == nil {
		b.Spec.Delete("linux.seccomp")
		return
	}
	b.Spec.Set("linux.seccomp", s)
}

// AddMount appends a mount to the spec's mounts.
func (b *Bundle) AddMount(destination, typ, source string, options ...string) {
	m := map[string]any{"destination": destination, "type": typ, "source": source}
	if len(options) > 0 {
		m["options"] = options
	}
	ms, _ := b.Spec.Get("mounts").([]any)
	b.Spec.Set("mounts", append(ms, m))
}

func ownedBy(fi os.FileInfo, uid int) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == uid
}
