package devcgroup

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDevicesMount(t *testing.T) {
	for _, tc := range []struct {
		name, mountinfo, want string
		err                   error
	}{
		{
			name: "hybrid",
			mountinfo: `25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
38 33 0:33 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,devices
39 33 0:34 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,cpu,cpuacct
`,
			want: "/sys/fs/cgroup/devices",
		},
		{
			name: "optional fields and escapes",
			mountinfo: `38 33 0:33 / /sys/fs/cgroup/dev\040ices rw,relatime shared:16 master:3 - cgroup cgroup rw,devices,freezer
`,
			want: "/sys/fs/cgroup/dev ices",
		},
		{
			name: "a bind of a sub-cgroup is not the root",
			mountinfo: `38 33 0:33 /docker/x /sys/fs/cgroup/devices ro,relatime - cgroup cgroup rw,devices
`,
			err: ErrNoCgroup,
		},
		{
			name:      "v2 only",
			mountinfo: "34 33 0:29 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw\n",
			err:       ErrNoCgroup,
		},
		{
			name:      "devices as a mount option of another type",
			mountinfo: "34 33 0:29 / /x rw - tmpfs devices rw,devices\n",
			err:       ErrNoCgroup,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := devicesMount([]byte(tc.mountinfo))
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Errorf("devicesMount = %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestDevicesPath(t *testing.T) {
	for _, tc := range []struct {
		name, cgroup, want string
		bad                bool
	}{
		{name: "podman runc", cgroup: "9:name=systemd:/libpod_parent/libpod-ab\n5:devices:/libpod_parent/libpod-ab\n0::/libpod_parent/libpod-ab\n", want: "/libpod_parent/libpod-ab"},
		{name: "combined controllers", cgroup: "3:devices,freezer:/x\n", want: "/x"},
		{name: "root", cgroup: "5:devices:/\n", want: "/"},
		{name: "colon in a name", cgroup: "5:devices:/a:b\n", want: "/a:b"},
		{name: "v2 only", cgroup: "0::/x\n", bad: true},
		{name: "forged second line", cgroup: "5:devices:/c/x\n5:devices:/\n", bad: true},
		{name: "another cgroup namespace", cgroup: "5:devices:../x\n", bad: true},
		{name: "dot-dot", cgroup: "5:devices:/a/../../b\n", bad: true},
		{name: "devicesx is not devices", cgroup: "5:devicesx:/x\n", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := devicesPath([]byte(tc.cgroup))
			if tc.bad {
				if err == nil {
					t.Errorf("devicesPath = %q, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("devicesPath = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestAllows(t *testing.T) {
	runcList := "b *:* m\nc *:* m\nc 1:3 rwm\nc 1:5 rwm\nc 5:0 rwm\nc 10:200 rwm\nc 136:* rwm\n"
	loop7 := Device{'b', 7, 14}
	ctl := Device{'c', 10, 237}
	for _, tc := range []struct {
		name, list string
		d          Device
		want       bool
	}{
		{"runc default: no loop", runcList, loop7, false},
		{"runc default: no loop-control", runcList, ctl, false},
		{"runc default: null", runcList, Device{'c', 1, 3}, true},
		{"runc default: pts wildcard minor", runcList, Device{'c', 136, 9}, true},
		{"m only is not rw", runcList, Device{'b', 8, 0}, false},
		{"allow all", "a *:* rwm\n", loop7, true},
		{"loop wildcard", "b 7:* rwm\n", loop7, true},
		{"wrong type", "c 7:* rwm\n", loop7, false},
		{"read only", "b 7:14 r\n", loop7, false},
		{"exact", "b 7:14 rw\n", loop7, true},
		{"other minor", "b 7:15 rwm\n", loop7, false},
		{"garbage ignored", "b 7:x rwm\nb\n\n", loop7, false},
		{"empty", "", loop7, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := allows(parseList([]byte(tc.list)), tc.d, access); got != tc.want {
				t.Errorf("allows(%q, %v) = %v, want %v", tc.list, tc.d, got, tc.want)
			}
		})
	}
}

func TestFromStat(t *testing.T) {
	st := unix.Stat_t{Mode: unix.S_IFBLK | 0o660, Rdev: unix.Mkdev(7, 300)}
	d, err := FromStat(&st)
	if err != nil || d != (Device{'b', 7, 300}) || d.String() != "b 7:300" {
		t.Errorf("FromStat = %v, %v", d, err)
	}
	st = unix.Stat_t{Mode: unix.S_IFCHR | 0o666, Rdev: unix.Mkdev(10, 237)}
	if d, err := FromStat(&st); err != nil || d.String() != "c 10:237" {
		t.Errorf("FromStat = %v, %v", d, err)
	}
	st = unix.Stat_t{Mode: unix.S_IFREG | 0o644}
	if _, err := FromStat(&st); err == nil {
		t.Error("a regular file is not a device")
	}
}

func TestListsPid(t *testing.T) {
	if !listsPid([]byte("1\n15053\n"), 15053) || listsPid([]byte("150530\n1\n"), 15053) || listsPid(nil, 1) {
		t.Error("listsPid")
	}
}

func FuzzDevicesPath(f *testing.F) {
	f.Add([]byte("5:devices:/libpod_parent/libpod-ab\n0::/\n"))
	f.Add([]byte("5:devices:/a\n5:devices:/b\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := devicesPath(b)
		if err != nil {
			return
		}
		if p == "" || p[0] != '/' {
			t.Fatalf("accepted %q", p)
		}
		for i := 0; i+1 < len(p); i++ {
			if p[i:i+2] == ".." && (i == 0 || p[i-1] == '/') && (i+2 == len(p) || p[i+2] == '/') {
				t.Fatalf("accepted %q", p)
			}
		}
	})
}

func TestUnified(t *testing.T) {
	mi := `34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
38 33 0:33 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,devices
`
	if got, err := unifiedMount([]byte(mi)); err != nil || got != "/sys/fs/cgroup/unified" {
		t.Errorf("unifiedMount = %q, %v", got, err)
	}
	if _, err := unifiedMount([]byte("38 33 0:33 /sub /x rw - cgroup2 cgroup2 rw\n")); !errors.Is(err, ErrNoCgroup) {
		t.Errorf("a bind of a sub-cgroup is not the root: %v", err)
	}
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "5:devices:/x\n0::/libpod_parent/libpod-ab\n", want: "/libpod_parent/libpod-ab"},
		{in: "0::/\n", want: "/"},
		{in: "5:devices:/x\n", bad: true},
		{in: "0::/a\n0::/b\n", bad: true},
		{in: "0::/a/../..\n", bad: true},
		{in: "0::../x\n", bad: true},
	} {
		got, err := unifiedPath([]byte(tc.in))
		if tc.bad != (err != nil) || got != tc.want {
			t.Errorf("unifiedPath(%q) = %q, %v", tc.in, got, err)
		}
	}
}

// TestGrantProgramJumps checks that every jump of the agent's program and of
// the filter program lands inside the program, and that the two-slot map
// loads are whole (the verifier would refuse otherwise; this finds it
// without root).
func TestGrantProgramJumps(t *testing.T) {
	for name, p := range map[string][]uint64{
		"grant":  grantProgram(7, 8),
		"filter": filterProgram([]Device{{'c', 1, 3}, {'b', 7, 300}}),
	} {
		for i := 0; i < len(p); i++ {
			code := uint8(p[i])
			if code == bpfLdDW {
				i++
				continue
			}
			if code&0x07 == 0x05 && code != bpfCall && code != bpfExit { // BPF_JMP
				off := int(int16(uint16(p[i] >> 16)))
				if dst := i + 1 + off; dst <= i || dst >= len(p) {
					t.Errorf("%s: jump at %d to %d", name, i, dst)
				}
			}
		}
		if uint8(p[len(p)-1]) != bpfExit {
			t.Errorf("%s: does not end with exit", name)
		}
	}
}
