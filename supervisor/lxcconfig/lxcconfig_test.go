package lxcconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loopvisor/loopvisor/notify"
)

const denylist = `2
denylist
reject_force_umount  # comment this to allow umount -f;  not recommended
[all]
kexec_load errno 1
`

func TestProfileMerge(t *testing.T) {
	for _, c := range []struct {
		name, base string
		noMount    bool
		want       []string
		wantErr    string
	}{
		{name: "none", want: []string{"2\ndenylist\n# loopvisor rules: begin\n[all]\n", "ioctl notify [1,19456,SCMP_CMP_MASKED_EQ,4294967295]", "umount2 notify"}},
		{name: "denylist", base: denylist, want: []string{"kexec_load errno 1\n# loopvisor rules: begin\n[all]\nioctl notify", "mount notify [3,0,SCMP_CMP_MASKED_EQ,12320]", "fsopen notify", "fsconfig notify", "fsmount notify", "fspick notify"}},
		{name: "no mount", base: denylist, noMount: true, want: []string{"ioctl notify [1,19586,"}},
		{name: "allowlist", base: "2\nallowlist\n[all]\nread\n", wantErr: "allowlist"},
		{name: "version 1", base: "1\n0\n1\n", wantErr: "version 2"},
		{name: "mount denied", base: denylist + "mount errno 1\n", wantErr: "rule for mount"},
		{name: "ioctl rule", base: denylist + "ioctl errno 1 [1,1,SCMP_CMP_EQ]\n", noMount: true, wantErr: "rule for ioctl"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Profile(c.base, c.noMount)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range c.want {
				if !strings.Contains(p, w) {
					t.Errorf("profile lacks %q:\n%s", w, p)
				}
			}
			if c.noMount && strings.Contains(p, "mount notify") {
				t.Errorf("--no-mount profile traps mount:\n%s", p)
			}
			if n := strings.Count(p, "ioctl notify"); n != len(notify.LoopCommands) {
				t.Errorf("%d ioctl rules, want one per trapped command (%d)", n, len(notify.LoopCommands))
			}
			// Merging the merged profile again gives the same profile.
			if again, err := Profile(p, c.noMount); err != nil || again != p {
				t.Errorf("not idempotent: %v\n%s\n---\n%s", err, p, again)
			}
		})
	}
}

// RewriteFile twice changes nothing; the block names the proxy, cookie,
// hook and the profile; the base profile comes from an included file.
func TestRewriteFileIdempotent(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "common.conf")
	base := filepath.Join(dir, "common.seccomp")
	cfg := filepath.Join(dir, "config")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	write(base, denylist)
	write(inc, "lxc.seccomp.profile = "+base+"\n")
	write(cfg, "lxc.include = "+inc+"\nlxc.net.0.type = empty\n")
	o := Options{Proxy: "/run/loopvisor/lxc.sock", Cookie: "max-loop=2", Loopvisor: "/usr/bin/loopvisor", StateDir: "/run/loopvisor"}
	if _, err := RewriteFile(cfg, o); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(cfg)
	prof, _ := os.ReadFile(cfg + ".seccomp")
	for _, w := range []string{
		"lxc.net.0.type = empty\n# loopvisor lxc-config: begin",
		"lxc.seccomp.profile = " + cfg + ".seccomp\n",
		"lxc.seccomp.notify.proxy = unix:/run/loopvisor/lxc.sock\n",
		"lxc.seccomp.notify.cookie = max-loop=2;mount-api=new\n",
		"lxc.hook.start-host = /usr/bin/loopvisor lxc-hook --state-dir /run/loopvisor\n",
		"lxc.cgroup.devices.allow = b 7:* rwm\n",
	} {
		if !strings.Contains(string(first), w) {
			t.Errorf("config lacks %q:\n%s", w, first)
		}
	}
	if !strings.HasPrefix(string(prof), denylist) {
		t.Errorf("profile does not start with the base:\n%s", prof)
	}
	if _, err := RewriteFile(cfg, o); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(cfg)
	prof2, _ := os.ReadFile(cfg + ".seccomp")
	if string(first) != string(second) || string(prof) != string(prof2) {
		t.Errorf("second run changed the files:\n%s\n---\n%s", first, second)
	}
	if st, _ := os.Stat(cfg); st.Mode().Perm() != 0o640 {
		t.Errorf("config mode %v", st.Mode())
	}
	o.Cookie = ""
	if _, err := RewriteFile(cfg, o); err != nil {
		t.Fatal(err)
	}
	third, _ := os.ReadFile(cfg)
	if !strings.Contains(string(third), "cookie = mount-api=new\n") || strings.Count(string(third), "begin") != 1 {
		t.Errorf("changed options did not replace the block:\n%s", third)
	}
	if _, err := RewriteFile(cfg, Options{Proxy: "relative.sock", Loopvisor: "/usr/bin/loopvisor"}); err == nil {
		t.Error("a relative proxy path was accepted")
	}
}
