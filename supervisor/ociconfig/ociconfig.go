package ociconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/loopvisor/loopvisor/loopctl/registry"
	"github.com/loopvisor/loopvisor/notify"
)

// Options says what `loopvisor oci-config` writes.
type Options struct {
	Listener string // linux.seccomp.listenerPath
	// StateDir is the agent's state directory; the container's
	// /dev/loop-control is bind-mounted from AgentNode(StateDir, "loop-control"), so
	// it is there before the container's first instruction (the runtime
	// does not wait for the agent). Default: the agent's default.
	StateDir string
	Metadata string // linux.seccomp.listenerMetadata ("" leaves it out)
	// Flags are seccomp flags to add (e.g. SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV);
	// only ones the runtime knows may be given.
	Flags []string
	// NoMount leaves mount calls untrapped (losetup only).
	NoMount bool
	// NoCapSysAdmin leaves the capabilities alone. By default
	// CAP_SYS_ADMIN is added to a user-namespaced container's bounding,
	// effective and permitted sets: mount needs it, and in a user
	// namespace it is the namespace's, not the host's.
	NoCapSysAdmin bool
}

// newAPIMetadata tells the agent that the filter traps fsopen, fsconfig
// and fsmount, so it may serve the new mount API.
const newAPIMetadata = "mount-api=new"

// mountSyscalls are the calls loopvisor traps for `mount -o loop`.
var mountSyscalls = []string{"mount", "umount2", "umount", "fsopen", "fsconfig", "fsmount", "fspick"}

type jsonObj = map[string]any

// Rewrite returns config (a runtime-spec config.json) with what
// loopvisor needs merged in, and notes for the user. It keeps the existing
// profile's default action and rules and refuses a profile it cannot merge
// safely. Applying it to its own output changes nothing.
func Rewrite(config []byte, o Options) ([]byte, []string, error) {
	if o.Listener == "" {
		return nil, nil, errors.New("oci-config: --listener is required")
	}
	var cfg jsonObj
	dec := json.NewDecoder(bytes.NewReader(config))
	dec.UseNumber()
	if err := dec.Decode(&cfg); err != nil {
		return nil, nil, fmt.Errorf("oci-config: not a JSON config: %w", err)
	}
	linux, _ := cfg["linux"].(jsonObj)
	if linux == nil {
		return nil, nil, errors.New("oci-config: the config has no \"linux\" section")
	}
	if !hasUserNS(linux) {
		return nil, nil, errors.New("oci-config: the config has no user namespace with uidMappings: loopvisor serves containers whose root is an unprivileged host uid (add a \"user\" namespace and uidMappings/gidMappings, e.g. 0 -> 100000)")
	}
	var notes []string
	sc, _ := linux["seccomp"].(jsonObj)
	if sc == nil {
		sc = jsonObj{
			"defaultAction": "SCMP_ACT_ALLOW",
			"architectures": []any{"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"},
		}
		linux["seccomp"] = sc
	}
	n, err := mergeSeccomp(sc, o)
	if err != nil {
		return nil, nil, err
	}
	notes = append(notes, n...)
	mergeDevices(linux)
	mergeNodeMounts(cfg, o.StateDir)
	if !o.NoCapSysAdmin && !o.NoMount {
		if addCapSysAdmin(cfg) {
			notes = append(notes, "added CAP_SYS_ADMIN (of the container's user namespace) to the process: mount needs it")
		}
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetIndent("", "\t")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(cfg); err != nil {
		return nil, nil, err
	}
	return out.Bytes(), notes, nil
}

func hasUserNS(linux jsonObj) bool {
	nss, _ := linux["namespaces"].([]any)
	for _, n := range nss {
		if m, ok := n.(jsonObj); ok && m["type"] == "user" {
			maps, _ := linux["uidMappings"].([]any)
			return len(maps) > 0 || m["path"] != nil
		}
	}
	return false
}

func strList(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func anyList(s []string) []any {
	out := make([]any, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// isOurs recognises the rules loopvisor adds, so a second run replaces them.
func isOurs(rule jsonObj) bool {
	names := strList(rule["names"])
	switch rule["action"] {
	case "SCMP_ACT_NOTIFY":
		for _, n := range names {
			if n != "ioctl" && !contains(mountSyscalls, n) {
				return false
			}
		}
		return len(names) > 0
	case "SCMP_ACT_ALLOW":
		return len(names) == 1 && names[0] == "ioctl" && isAlwaysArg(rule)
	}
	return false
}

// isAlwaysArg matches the "arg1 >= 0" condition loopvisor uses to allow
// every other ioctl once the loop commands are trapped.
func isAlwaysArg(rule jsonObj) bool {
	args, _ := rule["args"].([]any)
	if len(args) != 1 {
		return false
	}
	a, _ := args[0].(jsonObj)
	return a["op"] == "SCMP_CMP_GE" && fmt.Sprint(a["index"]) == "1" && fmt.Sprint(a["value"]) == "0"
}

// mergeSeccomp adds loopvisor's rules to a runtime-spec seccomp profile.
func mergeSeccomp(sc jsonObj, o Options) ([]string, error) {
	var notes []string
	def, _ := sc["defaultAction"].(string)
	if def == "" {
		return nil, errors.New("oci-config: linux.seccomp has no defaultAction")
	}
	if old, ok := sc["listenerPath"].(string); ok && old != "" && old != o.Listener {
		return nil, fmt.Errorf("oci-config: linux.seccomp.listenerPath is already %q; a container has one seccomp agent", old)
	}
	// Start from the profile without loopvisor's rules, remembering whether
	// they stood for an allowed ioctl.
	rules, _ := sc["syscalls"].([]any)
	var kept []any
	ioctlAllowed := def == "SCMP_ACT_ALLOW"
	allowed := map[string]bool{}
	// conds are the conditions (containers/common's and moby's
	// "includes"/"excludes": capabilities, architectures, kernel
	// versions) under which the profile allows a mount call; its trap
	// carries the same ones.
	conds := map[string][]jsonObj{}
	denied := map[string]bool{}
	for _, r := range rules {
		rule, ok := r.(jsonObj)
		if !ok {
			return nil, errors.New("oci-config: a linux.seccomp.syscalls entry is not an object")
		}
		if isOurs(rule) {
			if rule["action"] == "SCMP_ACT_ALLOW" {
				ioctlAllowed = true
			}
			if rule["action"] == "SCMP_ACT_NOTIFY" {
				c := condition(rule)
				for _, n := range strList(rule["names"]) {
					// trapped by a previous run: the profile allowed it
					if c == nil {
						allowed[n] = true
					} else {
						conds[n] = append(conds[n], c)
					}
				}
			}
			continue
		}
		names := strList(rule["names"])
		args, _ := rule["args"].([]any)
		conditional := len(args) > 0
		var rest []string
		for _, n := range names {
			if n != "ioctl" && !contains(mountSyscalls, n) {
				rest = append(rest, n)
				continue
			}
			switch {
			case rule["action"] == "SCMP_ACT_ALLOW" && !conditional && n != "ioctl" && condition(rule) != nil:
				conds[n] = append(conds[n], condition(rule))
				// dropped from this rule: loopvisor's trap below carries its condition
			case rule["action"] == "SCMP_ACT_ALLOW" && !conditional:
				allowed[n] = true
				if n == "ioctl" {
					ioctlAllowed = true
				}
				// dropped from this rule: loopvisor's rules below allow it
			case n == "ioctl" && conditional:
				if conflictsWithLoop(rule) {
					return nil, fmt.Errorf("oci-config: the profile has a %v rule on ioctl that names a loop command; remove it or merge by hand", rule["action"])
				}
				rest = append(rest, n)
			case conditional:
				return nil, fmt.Errorf("oci-config: the profile filters %s on its arguments; loopvisor cannot merge that safely (remove the rule or use --no-mount)", n)
			default:
				denied[n] = true
				rest = append(rest, n)
			}
		}
		if len(rest) == 0 {
			continue
		}
		rule["names"] = anyList(rest)
		kept = append(kept, rule)
	}
	if !ioctlAllowed {
		return nil, errors.New("oci-config: the profile does not allow ioctl, so loop ioctls cannot reach loopvisor; allow ioctl or start from a profile that does")
	}
	var ours []any
	// Every other ioctl stays allowed: an unconditional allow would hide
	// the conditional notify rules in libseccomp, this one does not.
	if def != "SCMP_ACT_ALLOW" {
		ours = append(ours, jsonObj{"names": []any{"ioctl"}, "action": "SCMP_ACT_ALLOW",
			"args": []any{jsonObj{"index": 1, "value": 0, "op": "SCMP_CMP_GE"}}})
	}
	for _, cmd := range notify.LoopCommands {
		ours = append(ours, jsonObj{"names": []any{"ioctl"}, "action": "SCMP_ACT_NOTIFY",
			"args": []any{jsonObj{"index": 1, "value": uint64(0xffffffff), "valueTwo": cmd, "op": "SCMP_CMP_MASKED_EQ"}}})
	}
	metadata := o.Metadata
	if !o.NoMount {
		var trap []string
		// conditional traps, one rule per distinct condition, in order
		var condKeys []string
		condNames := map[string][]string{}
		condOf := map[string]jsonObj{}
		for _, n := range mountSyscalls {
			if !denied[n] && (def == "SCMP_ACT_ALLOW" || allowed[n]) {
				trap = append(trap, n)
				continue
			}
			if !denied[n] && len(conds[n]) > 0 {
				for _, c := range conds[n] {
					k := canonical(c)
					if _, ok := condOf[k]; !ok {
						condKeys = append(condKeys, k)
						condOf[k] = c
					}
					condNames[k] = append(condNames[k], n)
				}
				continue
			}
			notes = append(notes, fmt.Sprintf("the profile does not allow %s; loopvisor leaves it so (mount -o loop needs mount and umount2)", n))
		}
		if len(trap) > 0 {
			ours = append(ours, jsonObj{"names": anyList(trap), "action": "SCMP_ACT_NOTIFY"})
		}
		for _, k := range condKeys {
			r := jsonObj{"names": anyList(condNames[k]), "action": "SCMP_ACT_NOTIFY"}
			for key, v := range condOf[k] {
				r[key] = v
			}
			ours = append(ours, r)
		}
		// The agent serves the new mount API only to filters that trap
		// all of it; an fsopen answered without its fsconfig would strand
		// the caller.
		if contains(trap, "fsopen") && contains(trap, "fsconfig") && contains(trap, "fsmount") &&
			!contains(strings.Split(metadata, ";"), newAPIMetadata) {
			if metadata != "" {
				metadata += ";"
			}
			metadata += newAPIMetadata
		}
	}
	sc["syscalls"] = append(kept, ours...)
	sc["listenerPath"] = o.Listener
	if metadata != "" {
		sc["listenerMetadata"] = metadata
	}
	flags := strList(sc["flags"])
	for _, f := range o.Flags {
		if !contains(flags, f) {
			flags = append(flags, f)
		}
	}
	if len(flags) > 0 {
		sort.Strings(flags)
		sc["flags"] = anyList(flags)
	}
	return notes, nil
}

// condition returns a rule's non-empty "includes" and "excludes" (the
// conditions containers/common and moby profiles put on a rule), or nil.
func condition(rule jsonObj) jsonObj {
	var c jsonObj
	for _, k := range []string{"includes", "excludes"} {
		if m, ok := rule[k].(jsonObj); ok && len(m) > 0 {
			if c == nil {
				c = jsonObj{}
			}
			c[k] = m
		}
	}
	return c
}

// canonical is a condition's JSON (maps encode with sorted keys).
func canonical(c jsonObj) string {
	b, _ := json.Marshal(c)
	return string(b)
}

// conflictsWithLoop reports whether a conditional ioctl rule compares
// argument 1 with a loop command.
func conflictsWithLoop(rule jsonObj) bool {
	args, _ := rule["args"].([]any)
	for _, x := range args {
		a, _ := x.(jsonObj)
		if fmt.Sprint(a["index"]) != "1" {
			continue
		}
		for _, cmd := range notify.LoopCommands {
			c := fmt.Sprint(cmd)
			if fmt.Sprint(a["value"]) == c || fmt.Sprint(a["valueTwo"]) == c {
				return true
			}
		}
	}
	return false
}

// mergeDevices adds /dev/loop-control and /dev/fuse to linux.devices and
// allows them, with loop block devices, in the device cgroup.
func mergeDevices(linux jsonObj) {
	devs, _ := linux["devices"].([]any)
	// /dev/loop-control and /dev/fuse come as bind mounts (see
	// mergeNodeMounts): a device entry is the host's node in a user
	// namespace, which the container's root may not be allowed to open.
	var kept []any
	for _, d := range devs {
		if m, ok := d.(jsonObj); ok && (m["path"] == "/dev/fuse" || m["path"] == "/dev/loop-control") {
			continue
		}
		kept = append(kept, d)
	}
	if kept != nil || devs != nil {
		linux["devices"] = kept
	}
	res, _ := linux["resources"].(jsonObj)
	if res == nil {
		res = jsonObj{}
		linux["resources"] = res
	}
	rules, _ := res["devices"].([]any)
	allow := []jsonObj{
		{"allow": true, "type": "c", "major": 10, "minor": 237, "access": "rwm"},
		{"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
		{"allow": true, "type": "b", "major": 7, "access": "rwm"},
	}
	for _, a := range allow {
		found := false
		for _, r := range rules {
			m, ok := r.(jsonObj)
			if ok && m["allow"] == true && m["type"] == a["type"] && fmt.Sprint(m["major"]) == fmt.Sprint(a["major"]) &&
				fmt.Sprint(m["minor"]) == fmt.Sprint(a["minor"]) && m["access"] == a["access"] {
				found = true
			}
		}
		if !found {
			rules = append(rules, a)
		}
	}
	res["devices"] = rules
}

// AgentNode is the node the agent keeps under its state directory for a
// container's first /dev/NAME (loop-control, fuse).
func AgentNode(stateDir, name string) string {
	if stateDir == "" {
		stateDir = registry.DefaultStateDir
	}
	return stateDir + "/dev/" + name
}

// mergeNodeMounts bind-mounts the agent's loop-control and fuse nodes on
// the container's /dev. They are there before the container's first
// instruction (the runtime does not wait for the agent); the agent replaces
// /dev/loop-control with the instance's own node as soon as it gets the
// container.
func mergeNodeMounts(cfg jsonObj, stateDir string) {
	mounts, _ := cfg["mounts"].([]any)
	for _, name := range []string{"loop-control", "fuse"} {
		dst := "/dev/" + name
		found := false
		for _, m := range mounts {
			if mm, ok := m.(jsonObj); ok && mm["destination"] == dst {
				found = true
			}
		}
		if !found {
			mounts = append(mounts, jsonObj{
				"destination": dst, "type": "bind",
				"source": AgentNode(stateDir, name), "options": []any{"bind"},
			})
		}
	}
	cfg["mounts"] = mounts
}

// addCapSysAdmin adds CAP_SYS_ADMIN to process.capabilities' bounding,
// effective and permitted sets; it reports whether anything changed.
func addCapSysAdmin(cfg jsonObj) bool {
	proc, _ := cfg["process"].(jsonObj)
	if proc == nil {
		return false
	}
	caps, _ := proc["capabilities"].(jsonObj)
	if caps == nil {
		caps = jsonObj{}
		proc["capabilities"] = caps
	}
	changed := false
	for _, set := range []string{"bounding", "effective", "permitted"} {
		l := strList(caps[set])
		if !contains(l, "CAP_SYS_ADMIN") {
			caps[set] = anyList(append(l, "CAP_SYS_ADMIN"))
			changed = true
		}
	}
	return changed
}

// RewriteFile rewrites path in place (atomically).
func RewriteFile(path string, o Options) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out, notes, err := Rewrite(b, o)
	if err != nil {
		return nil, err
	}
	if bytes.Equal(out, b) {
		return notes, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	tmp := path + ".loopvisor.tmp"
	if err := os.WriteFile(tmp, out, st.Mode().Perm()); err != nil {
		return nil, err
	}
	return notes, os.Rename(tmp, path)
}
