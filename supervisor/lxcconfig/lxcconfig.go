package lxcconfig

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/loopvisor/loopvisor/loopctl/registry"
	"github.com/loopvisor/loopvisor/notify"
)

// Options says what `loopvisor lxc-config` writes.
type Options struct {
	Proxy  string // the agent's --lxc-socket; required
	Cookie string // lxc.seccomp.notify.cookie ("" leaves it out)
	// Profile is where the merged seccomp profile is written; default
	// CONFIG.seccomp next to the config.
	Profile string
	// BaseProfile is the profile to merge into; default: the last
	// lxc.seccomp.profile of the config and the files it includes, or
	// none (loopvisor's rules in a denylist profile of their own).
	BaseProfile string
	NoMount     bool   // trap loop ioctls only
	StateDir    string // the agent's state directory (its dev/ nodes)
	// Loopvisor is the absolute path of the loopvisor binary LXC runs as
	// the start-host hook (`loopvisor lxc-hook`); required.
	Loopvisor string
}

const (
	beginMark = "# loopvisor lxc-config: begin (rewritten by every run of loopvisor lxc-config)"
	endMark   = "# loopvisor lxc-config: end"
	// In the profile.
	rulesBegin = "# loopvisor rules: begin"
	rulesEnd   = "# loopvisor rules: end"
)

// mountCalls are the calls loopvisor's rules name besides ioctl (unless
// NoMount), as oci-config's. "umount" exists only in the i386 ABI; LXC
// skips it where the ABI has no such call.
var mountCalls = []string{"mount", "umount2", "umount", "fsopen", "fsconfig", "fsmount", "fspick"}

// newAPICookie tells the agent that the profile traps fsopen, fsconfig and
// fsmount, so it may serve the new mount API (oci-config puts the same
// word into listenerMetadata).
const newAPICookie = "mount-api=new"

// Rules returns loopvisor's profile lines (LXC's seccomp v2 syntax, for
// the [all] section).
func Rules(noMount bool) []string {
	var out []string
	for _, cmd := range notify.LoopCommands {
		// [index,value,op,mask]: LXC passes mask as datum_a and value as
		// datum_b, i.e. (arg1 & 0xffffffff) == cmd.
		out = append(out, fmt.Sprintf("ioctl notify [1,%d,SCMP_CMP_MASKED_EQ,4294967295]", cmd))
	}
	if !noMount {
		out = append(out, fmt.Sprintf("mount notify [3,0,SCMP_CMP_MASKED_EQ,%d]", notify.MsRemount|notify.MsBind|notify.MsMove))
		for _, n := range mountCalls[1:] {
			out = append(out, n+" notify")
		}
	}
	return out
}

// Profile merges loopvisor's rules into base, an LXC seccomp profile
// ("" for none).
func Profile(base string, noMount bool) (string, error) {
	base = stripBetween(base, rulesBegin, rulesEnd)
	var b strings.Builder
	if strings.TrimSpace(base) == "" {
		b.WriteString("2\ndenylist\n")
	} else {
		lines := strings.Split(base, "\n")
		var head []string
		for _, l := range lines {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
				head = append(head, t)
			}
			if len(head) == 2 {
				break
			}
		}
		if len(head) < 2 || head[0] != "2" {
			return "", errors.New("lxc-config: the base profile is not an LXC version 2 profile; merge loopvisor's rules by hand (loopvisor lxc-config --base-profile /dev/null prints a profile of its own)")
		}
		mode := strings.Fields(head[1])[0]
		if mode != "denylist" && mode != "blacklist" {
			return "", fmt.Errorf("lxc-config: the base profile is a %s profile; loopvisor merges only denylists (an allowlist must allow ioctl, mount, umount2 and fsopen and get the notify rules by hand)", mode)
		}
		trapped := map[string]bool{"ioctl": true}
		if !noMount {
			for _, n := range mountCalls {
				trapped[n] = true
			}
		}
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) > 0 && trapped[f[0]] {
				return "", fmt.Errorf("lxc-config: the base profile has a rule for %s (%q); LXC cannot load it together with loopvisor's notify rules: remove it or use --no-mount", f[0], strings.TrimSpace(l))
			}
		}
		b.WriteString(strings.TrimRight(base, "\n"))
		b.WriteString("\n")
	}
	b.WriteString(rulesBegin + "\n[all]\n")
	for _, r := range Rules(noMount) {
		b.WriteString(r + "\n")
	}
	b.WriteString(rulesEnd + "\n")
	return b.String(), nil
}

// Block returns the config lines loopvisor needs (without markers).
func Block(o Options, profile string) []string {
	state := o.StateDir
	if state == "" {
		state = registry.DefaultStateDir
	}
	out := []string{
		"lxc.seccomp.profile = " + profile,
		"lxc.seccomp.notify.proxy = unix:" + o.Proxy,
	}
	if c := cookie(o); c != "" {
		out = append(out, "lxc.seccomp.notify.cookie = "+c)
	}
	// The nodes must be there before the container's first instruction
	// (LXC does not wait for the agent); the agent replaces
	// /dev/loop-control with the instance's own at the first trapped call.
	// They come from the start-host hook (host root), not lxc.mount.entry:
	// LXC opens a mount entry's source as the container's root, which
	// cannot reach the agent's root-only node directory.
	out = append(out, fmt.Sprintf("lxc.hook.start-host = %s lxc-hook --state-dir %s", o.Loopvisor, state))
	for _, v := range []string{"cgroup", "cgroup2"} {
		for _, d := range []string{"c 10:237 rwm", "c 10:229 rwm", "b 7:* rwm"} {
			out = append(out, "lxc."+v+".devices.allow = "+d)
		}
	}
	return out
}

// cookie is o.Cookie, with mount-api=new added when the rules trap the
// whole new mount API.
func cookie(o Options) string {
	c := o.Cookie
	if o.NoMount {
		return c
	}
	for _, kv := range strings.Split(c, ";") {
		if strings.TrimSpace(kv) == newAPICookie {
			return c
		}
	}
	if c != "" {
		c += ";"
	}
	return c + newAPICookie
}

// Rewrite returns config with loopvisor's block (re)placed at its end, and
// the profile text to write at profilePath. base is the profile to merge
// into ("" for none).
func Rewrite(config, base string, o Options, profilePath string) (string, string, error) {
	if o.Proxy == "" {
		return "", "", errors.New("lxc-config: --proxy is required")
	}
	if !filepath.IsAbs(o.Proxy) || !filepath.IsAbs(o.Loopvisor) || strings.ContainsAny(o.Proxy+o.Cookie+o.Loopvisor+o.StateDir, "\n") ||
		strings.ContainsAny(o.Loopvisor+o.StateDir, " \t") {
		return "", "", errors.New("lxc-config: the proxy and loopvisor's path must be absolute; no option may hold a newline, the binary's and the state directory's paths no blank")
	}
	prof, err := Profile(base, o.NoMount)
	if err != nil {
		return "", "", err
	}
	cfg := strings.TrimRight(stripBetween(config, beginMark, endMark), "\n")
	var b strings.Builder
	if cfg != "" {
		b.WriteString(cfg + "\n")
	}
	b.WriteString(beginMark + "\n")
	for _, l := range Block(o, profilePath) {
		b.WriteString(l + "\n")
	}
	b.WriteString(endMark + "\n")
	return b.String(), prof, nil
}

// stripBetween removes the lines from begin to end (markers included).
func stripBetween(s, begin, end string) string {
	var out []string
	in := false
	for _, l := range strings.Split(s, "\n") {
		switch strings.TrimSpace(l) {
		case begin:
			in = true
			continue
		case end:
			if in {
				in = false
				continue
			}
		}
		if !in {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// FindProfile returns the lxc.seccomp.profile LXC would use for config
// (the last one, following lxc.include files and directories of *.conf),
// or "" if none is set.
func FindProfile(config string) (string, error) {
	var last string
	var walk func(text string, depth int) error
	walk = func(text string, depth int) error {
		if depth > 8 {
			return errors.New("lxc-config: lxc.include nested too deep")
		}
		sc := bufio.NewScanner(strings.NewReader(text))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), "=")
			if !ok {
				continue
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			switch k {
			case "lxc.seccomp.profile":
				last = v
			case "lxc.include":
				files, err := includeFiles(v)
				if err != nil {
					return err
				}
				for _, f := range files {
					b, err := os.ReadFile(f)
					if err != nil {
						return fmt.Errorf("lxc-config: lxc.include: %w", err)
					}
					if err := walk(string(b), depth+1); err != nil {
						return err
					}
				}
			}
		}
		return sc.Err()
	}
	if err := walk(config, 0); err != nil {
		return "", err
	}
	return last, nil
}

// includeFiles lists what lxc.include = path reads: the file, or a
// directory's *.conf files in order. A missing directory is skipped, as
// LXC's userns.conf.d is.
func includeFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	m, err := filepath.Glob(filepath.Join(path, "*.conf"))
	sort.Strings(m)
	return m, err
}

// RewriteFile rewrites the config at path in place and writes the merged
// profile (o.Profile, default path+".seccomp"). It returns notes for the
// user. Running it again with the same options changes neither file.
func RewriteFile(path string, o Options) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	profilePath := o.Profile
	if profilePath == "" {
		profilePath = path + ".seccomp"
	}
	if profilePath, err = filepath.Abs(profilePath); err != nil {
		return nil, err
	}
	config := stripBetween(string(raw), beginMark, endMark)
	var notes []string
	basePath := o.BaseProfile
	if basePath == "" {
		if basePath, err = FindProfile(config); err != nil {
			return nil, err
		}
		if basePath != "" {
			notes = append(notes, "merged loopvisor's rules into "+basePath)
		}
	}
	var base string
	if basePath != "" && basePath != os.DevNull {
		b, err := os.ReadFile(basePath)
		if err != nil {
			return nil, fmt.Errorf("lxc-config: base profile: %w", err)
		}
		base = string(b)
	}
	out, prof, err := Rewrite(config, base, o, profilePath)
	if err != nil {
		return nil, err
	}
	if err := writeIfChanged(profilePath, []byte(prof), 0o644); err != nil {
		return nil, err
	}
	return notes, writeIfChanged(path, []byte(out), 0)
}

// writeIfChanged replaces path atomically unless it already holds data;
// perm 0 keeps the existing file's mode.
func writeIfChanged(path string, data []byte, perm os.FileMode) error {
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, data) {
		return nil
	}
	if perm == 0 {
		perm = 0o644
		if st, err := os.Stat(path); err == nil {
			perm = st.Mode().Perm()
		}
	}
	tmp := path + ".loopvisor.tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
