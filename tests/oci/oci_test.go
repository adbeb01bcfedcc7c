package oci

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestParseLdd(t *testing.T) {
	cases := []struct {
		name, out string
		want      []string
		err       bool
	}{
		{"dynamic", "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n",
			[]string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}, false},
		{"missing", "\tlibfoo.so.1 => not found\n", nil, true},
		{"empty", "", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseLdd(c.out)
			if (err != nil) != c.err {
				t.Fatalf("err = %v, want error %v", err, c.err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestSpecEdit(t *testing.T) {
	s, err := ParseSpec([]byte(`{"ociVersion":"1.0.2-dev","x-unknown":{"keep":1},"process":{"args":["sh"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	s.Set("process.terminal", false)
	s.Set("linux.seccomp", NotifySeccomp("/tmp/a.sock", "m", IoctlNotify(0x4C82)...))
	s.Set("x-big", uint64(0xffffffffffffff01))
	if args, ok := s.Get("process.args").([]any); !ok || len(args) == 0 || args[0] != "sh" || s.Get("x-unknown.keep") != json.Number("1") {
		t.Fatalf("lost fields: %v", s)
	}
	s.Delete("process.args")
	s.Delete("no.such.path")
	out, _ := json.Marshal(s)
	for _, want := range []string{`"terminal":false`, `"x-unknown":{"keep":1}`,
		`"args":[{"index":1,"op":"SCMP_CMP_MASKED_EQ","value":4294967295,"valueTwo":19586}]`,
		`"x-big":18446744073709551361`,
		`"listenerPath":"/tmp/a.sock"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("%s lacks %s", out, want)
		}
	}
	if strings.Contains(string(out), `"args":["sh"]`) {
		t.Errorf("Delete kept process.args: %s", out)
	}
}
