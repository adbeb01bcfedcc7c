package oci

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tarball writes the headers (with content for regular files) to a file
// in dir.
func tarball(t *testing.T, dir string, entries []*tar.Header, content map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(content[h.Name]))
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(content[h.Name])); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "x.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUnpackShifted: owners are shifted, setuid/setgid/sticky bits
// survive the chown, links are kept, device nodes skipped, and members
// that leave the root are refused.
func TestUnpackShifted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	tmp := t.TempDir()
	img := tarball(t, tmp, []*tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./usr/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./usr/bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./usr/bin/mount", Typeflag: tar.TypeReg, Mode: 0o4755},
		{Name: "./usr/bin/chage", Typeflag: tar.TypeReg, Mode: 0o2755, Gid: 42},
		{Name: "./usr/bin/perl5", Typeflag: tar.TypeLink, Linkname: "./usr/bin/mount"},
		{Name: "./bin", Typeflag: tar.TypeSymlink, Linkname: "usr/bin"},
		{Name: "./tmp/", Typeflag: tar.TypeDir, Mode: 0o1777},
		{Name: "./home/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./home/u/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: 1000, Gid: 1000},
		{Name: "./dev/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
	}, map[string]string{"./usr/bin/mount": "m", "./usr/bin/chage": "c"})
	root := filepath.Join(tmp, "root")
	if err := UnpackShifted(img, root, HostID); err != nil {
		t.Fatal(err)
	}
	for _, msg := range CheckShifted(root, []Owner{
		{".", 0, 0, os.ModeDir | 0o755},
		{"usr/bin/mount", 0, 0, os.ModeSetuid | 0o755},
		{"usr/bin/chage", 0, 42, os.ModeSetgid | 0o755},
		{"tmp", 0, 0, os.ModeDir | os.ModeSticky | 0o777},
		{"home/u", 1000, 1000, os.ModeDir | 0o700},
		{"bin", 0, 0, os.ModeSymlink | 0o777},
	}) {
		t.Error(msg)
	}
	a, _ := os.Stat(filepath.Join(root, "usr/bin/mount"))
	b, _ := os.Stat(filepath.Join(root, "usr/bin/perl5"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Errorf("hard link not kept")
	}
	if fi, err := os.Stat(filepath.Join(root, "usr/bin/mount")); err != nil || fi.ModTime().Unix() != 1700000000 {
		t.Errorf("mtime not kept: %v %v", fi, err)
	}
	if _, err := os.Lstat(filepath.Join(root, "dev/null")); err == nil {
		t.Errorf("device node created")
	}

	for name, bad := range map[string][]*tar.Header{
		"through-symlink": {
			{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: "./out", Typeflag: tar.TypeSymlink, Linkname: tmp},
			{Name: "./out/evil", Typeflag: tar.TypeReg, Mode: 0o644},
		},
		"dir-over-symlink": {
			{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: "./out", Typeflag: tar.TypeSymlink, Linkname: tmp},
			{Name: "./out/", Typeflag: tar.TypeDir, Mode: 0o777},
			{Name: "./out/evil", Typeflag: tar.TypeReg, Mode: 0o644},
		},
		"hardlink-out": {
			{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: "./out", Typeflag: tar.TypeSymlink, Linkname: tmp},
			{Name: "./l", Typeflag: tar.TypeLink, Linkname: "./out/x.tar"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			img := tarball(t, d, bad, nil)
			before, _ := os.Stat(tmp)
			err := UnpackShifted(img, filepath.Join(d, "root"), HostID)
			if name != "dir-over-symlink" && (err == nil || !strings.Contains(err.Error(), "leaves the root")) {
				t.Errorf("err = %v, want 'leaves the root'", err)
			}
			if _, err := os.Lstat(filepath.Join(tmp, "evil")); err == nil {
				t.Errorf("wrote outside the root")
			}
			if after, _ := os.Stat(tmp); after.Mode() != before.Mode() {
				t.Errorf("changed the mode of a directory outside the root: %v -> %v", before.Mode(), after.Mode())
			}
		})
	}
}
