package ociconfig

import (
	"encoding/json"
	"strings"
	"testing"
)

const baseConfig = `{
	"ociVersion": "1.0.2-dev",
	"process": {"args": ["sh"], "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}},
	"root": {"path": "rootfs"},
	"x-unknown": {"kept": true},
	"linux": {
		"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "user"}],
		"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
		"gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
		"resources": {"devices": [{"allow": false, "access": "rwm"}]}
		%s
	}
}`

func config(seccomp string) []byte {
	if seccomp != "" {
		seccomp = `, "seccomp": ` + seccomp
	}
	return []byte(strings.Replace(baseConfig, "%s", seccomp, 1))
}

var opts = Options{Listener: "/run/loopvisor/agent.sock", Metadata: "max-loop=4", Flags: []string{"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"}}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// obj returns m[key] as a JSON object, failing t if it is not one.
func obj(t *testing.T, m map[string]any, key string) map[string]any {
	t.Helper()
	o, ok := m[key].(map[string]any)
	if !ok {
		t.Fatalf("%s: not an object: %v", key, m[key])
	}
	return o
}

func rules(t *testing.T, b []byte) []map[string]any {
	sc := obj(t, obj(t, decode(t, b), "linux"), "seccomp")
	var out []map[string]any
	list, ok := sc["syscalls"].([]any)
	if !ok {
		t.Fatalf("syscalls: %v", sc["syscalls"])
	}
	for _, r := range list {
		rule, ok := r.(map[string]any)
		if !ok {
			t.Fatalf("rule: %v", r)
		}
		out = append(out, rule)
	}
	return out
}

func TestOCIConfigNoProfile(t *testing.T) {
	out, notes, err := Rewrite(config(""), opts)
	if err != nil {
		t.Fatal(err)
	}
	m := decode(t, out)
	sc := obj(t, obj(t, m, "linux"), "seccomp")
	if sc["defaultAction"] != "SCMP_ACT_ALLOW" || sc["listenerPath"] != opts.Listener || sc["listenerMetadata"] != "max-loop=4;mount-api=new" {
		t.Errorf("seccomp: %v", sc)
	}
	if m["x-unknown"] == nil {
		t.Error("unknown fields must be kept")
	}
	rs := rules(t, out)
	notifies := 0
	for _, r := range rs {
		if r["action"] == "SCMP_ACT_NOTIFY" {
			notifies++
		}
		if names, _ := r["names"].([]any); len(names) > 0 && names[0] == "ioctl" {
			args, _ := r["args"].([]any)
			if len(args) == 0 {
				t.Fatalf("ioctl rule without args: %v", r)
			}
			a, _ := args[0].(map[string]any)
			if v, _ := a["value"].(float64); a["op"] != "SCMP_CMP_MASKED_EQ" || v != 0xffffffff {
				t.Errorf("ioctl rules must compare the low 32 bits: %v", a)
			}
		}
	}
	if notifies != 18 { // 14 loop commands, BLKRRPART, BLKPG, HDIO_GETGEO + the mount family
		t.Errorf("%d notify rules", notifies)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "CAP_SYS_ADMIN") {
		t.Errorf("notes: %v", notes)
	}
	caps := obj(t, obj(t, m, "process"), "capabilities")
	if !strings.Contains(string(mustJSON(caps["effective"])), "CAP_SYS_ADMIN") {
		t.Errorf("caps: %v", caps)
	}
	if ms := string(mustJSON(m["mounts"])); !strings.Contains(ms, `"source":"/run/loopvisor/dev/loop-control"`) || !strings.Contains(ms, `"source":"/run/loopvisor/dev/fuse"`) {
		t.Errorf("mounts: %s", ms)
	}
	cg := string(mustJSON(obj(t, m, "linux")["resources"]))
	if !strings.Contains(cg, `"major":7`) || !strings.Contains(cg, `"minor":237`) {
		t.Errorf("device cgroup: %s", cg)
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func TestOCIConfigIdempotent(t *testing.T) {
	for _, prof := range []string{"", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "ioctl", "mount", "umount2"], "action": "SCMP_ACT_ALLOW"}]}`} {
		once, _, err := Rewrite(config(prof), opts)
		if err != nil {
			t.Fatal(err)
		}
		twice, _, err := Rewrite(once, opts)
		if err != nil {
			t.Fatal(err)
		}
		if string(once) != string(twice) {
			t.Errorf("second run changed the config:\n%s\n---\n%s", once, twice)
		}
	}
}

// A default-deny profile that allows ioctl unconditionally: the allow is
// replaced by one libseccomp does not let hide the notify rules, and
// syscalls the profile denies stay denied.
func TestOCIConfigDefaultDeny(t *testing.T) {
	prof := `{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
		"syscalls": [{"names": ["read", "ioctl", "mount"], "action": "SCMP_ACT_ALLOW"},
		{"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 21522, "op": "SCMP_CMP_EQ"}]}]}`
	out, notes, err := Rewrite(config(prof), opts)
	if err != nil {
		t.Fatal(err)
	}
	var sawRead, sawGE, sawTIOCSTI bool
	var trapped []any
	for _, r := range rules(t, out) {
		names, _ := r["names"].([]any)
		if len(names) == 0 {
			t.Fatalf("rule without names: %v", r)
		}
		switch {
		case r["action"] == "SCMP_ACT_ALLOW" && names[0] == "read":
			sawRead = true
			if len(names) != 1 {
				t.Errorf("ioctl and mount must leave the unconditional allow: %v", names)
			}
		case r["action"] == "SCMP_ACT_ALLOW" && names[0] == "ioctl":
			sawGE = true
		case r["action"] == "SCMP_ACT_ERRNO":
			sawTIOCSTI = true
		case r["action"] == "SCMP_ACT_NOTIFY" && names[0] != "ioctl":
			trapped = names
		}
	}
	if !sawRead || !sawGE || !sawTIOCSTI {
		t.Errorf("rules lost: read %v ge %v errno %v", sawRead, sawGE, sawTIOCSTI)
	}
	if len(trapped) != 1 || trapped[0] != "mount" {
		t.Errorf("only the allowed mount may be trapped, got %v", trapped)
	}
	if len(notes) < 3 {
		t.Errorf("notes should say umount2/umount/fsopen stay denied: %v", notes)
	}
	// fsopen is not trapped: the agent must not serve the new mount API.
	if md := obj(t, obj(t, decode(t, out), "linux"), "seccomp")["listenerMetadata"]; md != "max-loop=4" {
		t.Errorf("listenerMetadata %v, want max-loop=4 without mount-api=new", md)
	}
}

// The new mount API needs fsopen, fsconfig and fsmount all trapped: a
// profile that allows fsopen but not fsconfig gets no mount-api=new.
func TestOCIConfigNewAPIMetadata(t *testing.T) {
	for _, c := range []struct {
		allow, want string
	}{
		{`"read", "ioctl", "mount", "umount2", "fsopen", "fsconfig", "fsmount"`, "max-loop=4;mount-api=new"},
		{`"read", "ioctl", "mount", "umount2", "fsopen", "fsmount"`, "max-loop=4"},
	} {
		prof := `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": [` + c.allow + `], "action": "SCMP_ACT_ALLOW"}]}`
		out, _, err := Rewrite(config(prof), opts)
		if err != nil {
			t.Fatal(err)
		}
		if md := obj(t, obj(t, decode(t, out), "linux"), "seccomp")["listenerMetadata"]; md != c.want {
			t.Errorf("allowing %s: listenerMetadata %v, want %s", c.allow, md, c.want)
		}
	}
}

func TestOCIConfigRefusals(t *testing.T) {
	for name, c := range map[string]struct {
		cfg  []byte
		want string
	}{
		"no userns":         {[]byte(`{"linux": {"namespaces": [{"type": "mount"}]}}`), "user namespace"},
		"ioctl denied":      {config(`{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}`), "does not allow ioctl"},
		"loop cmd rule":     {config(`{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 19584, "op": "SCMP_CMP_EQ"}]}]}`), "names a loop command"},
		"conditional mount": {config(`{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 3, "value": 1, "op": "SCMP_CMP_EQ"}]}]}`), "filters mount"},
		"other listener":    {config(`{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/other.sock"}`), "already"},
		"not json":          {[]byte(`{`), "not a JSON"},
		"no default action": {config(`{"syscalls": []}`), "defaultAction"},
	} {
		_, _, err := Rewrite(c.cfg, opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one containing %q", name, err, c.want)
		}
	}
}

// A profile in the containers/common and moby format that allows mount
// calls only under a condition ("includes": a capability): the trap carries
// the same condition, so a container without the capability still gets the
// profile's default action, the rest of the conditional rule stays, and a
// second run changes nothing.
func TestOCIConfigConditionalMount(t *testing.T) {
	prof := `{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
		"syscalls": [{"names": ["read", "ioctl"], "action": "SCMP_ACT_ALLOW", "includes": {}, "excludes": {}},
		{"names": ["mount", "umount2", "sethostname"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}, "excludes": {}}]}`
	out, _, err := Rewrite(config(prof), opts)
	if err != nil {
		t.Fatal(err)
	}
	twice, _, err := Rewrite(out, opts)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != string(twice) {
		t.Errorf("second run changed the config:\n%s\n---\n%s", out, twice)
	}
	var kept, trapped bool
	for _, r := range rules(t, out) {
		names, _ := r["names"].([]any)
		inc, _ := r["includes"].(map[string]any)
		caps, _ := inc["caps"].([]any)
		switch {
		case r["action"] == "SCMP_ACT_ALLOW" && len(names) == 1 && names[0] == "sethostname":
			kept = len(caps) == 1 && caps[0] == "CAP_SYS_ADMIN"
		case r["action"] == "SCMP_ACT_NOTIFY" && names[0] != "ioctl":
			if len(names) != 2 || names[0] != "mount" || names[1] != "umount2" || len(caps) != 1 || caps[0] != "CAP_SYS_ADMIN" {
				t.Errorf("the mount trap must be mount, umount2 under CAP_SYS_ADMIN only: %v", r)
			}
			trapped = true
		case r["action"] == "SCMP_ACT_ALLOW":
			for _, n := range names {
				if n == "mount" || n == "umount2" {
					t.Errorf("%s left allowed: %v", n, r)
				}
			}
		}
	}
	if !kept || !trapped {
		t.Errorf("conditional rule kept %v, conditional trap %v:\n%s", kept, trapped, out)
	}
}

// fspick is trapped where the profile allows it (the remount of the new
// mount API, mountproxy/fspick.go), also when an older oci-config's output
// (whose notify rule lacks it) is rewritten; a profile that does not allow
// it keeps it so, and still gets mount-api=new.
func TestOCIConfigFspick(t *testing.T) {
	trapped := func(out []byte) bool {
		rules, _ := obj(t, obj(t, decode(t, out), "linux"), "seccomp")["syscalls"].([]any)
		for _, r := range rules {
			rule, _ := r.(map[string]any)
			if rule["action"] != "SCMP_ACT_NOTIFY" {
				continue
			}
			names, _ := rule["names"].([]any)
			for _, n := range names {
				if n == "fspick" {
					return true
				}
			}
		}
		return false
	}
	for _, c := range []struct {
		prof string
		want bool
	}{
		{`{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "ioctl", "mount", "umount2", "fsopen", "fsconfig", "fsmount", "fspick"], "action": "SCMP_ACT_ALLOW"}]}`, true},
		{`{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "ioctl", "mount", "umount2", "fsopen", "fsconfig", "fsmount"], "action": "SCMP_ACT_ALLOW"}]}`, false},
		// An older oci-config's output: its notify rule has no fspick.
		{`{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/loopvisor/agent.sock", "listenerMetadata": "max-loop=4;mount-api=new", "syscalls": [{"names": ["umount2", "umount", "fsopen", "fsconfig", "fsmount"], "action": "SCMP_ACT_NOTIFY"}]}`, true},
	} {
		out, _, err := Rewrite(config(c.prof), opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := trapped(out); got != c.want {
			t.Errorf("%s: fspick trapped %v, want %v", c.prof, got, c.want)
		}
		if md := obj(t, obj(t, decode(t, out), "linux"), "seccomp")["listenerMetadata"]; md != "max-loop=4;mount-api=new" {
			t.Errorf("%s: listenerMetadata %v", c.prof, md)
		}
	}
}
