package oci

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// The C probes in testdata reproduce the measurements README.md reports;
// they must keep compiling (no root needed).
func TestProbesCompile(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not installed")
	}
	srcs, err := filepath.Glob("testdata/*.c")
	if err != nil || len(srcs) == 0 {
		t.Fatalf("no probes: %v", err)
	}
	for _, src := range srcs {
		if out, err := exec.Command("gcc", "-fsyntax-only", "-Wall", src).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", src, err, out)
		}
	}
}
