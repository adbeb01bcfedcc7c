package parttable

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// sfdiskParts returns what sfdisk says of an image: number, start, size in
// bytes.
func sfdiskParts(t *testing.T, img string) []Partition {
	out, err := exec.Command("sfdisk", "-d", img).Output()
	if err != nil {
		t.Fatalf("sfdisk -d: %v", err)
	}
	var parts []Partition
	for _, l := range strings.Split(string(out), "\n") {
		name, rest, ok := strings.Cut(l, " : ")
		if !ok || !strings.HasPrefix(name, img) {
			continue
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(name, img))
		var p Partition
		p.Number = n
		for _, f := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
			x, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			switch strings.TrimSpace(k) {
			case "start":
				p.Start = x * 512
			case "size":
				p.Size = x * 512
			}
		}
		parts = append(parts, p)
	}
	return parts
}

func TestReadPartitionsAgainstSfdisk(t *testing.T) {
	if _, err := exec.LookPath("sfdisk"); err != nil {
		t.Skip("sfdisk not installed (make deps)")
	}
	for name, layout := range map[string]string{
		"gpt":      "label: gpt\n,16M,U\n,8M,L\n,,L\n",
		"mbr":      "label: dos\n,8M,c\n,8M,83\n",
		"extended": "label: dos\n,8M,c\n,,5\n,4M,83\n,4M,83\n,,83\n",
	} {
		t.Run(name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "d.img")
			f, _ := os.Create(img)
			_ = f.Truncate(64 << 20)
			_ = f.Close()
			cmd := exec.Command("sfdisk", "-q", img)
			cmd.Stdin = strings.NewReader(layout)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("sfdisk: %v %s", err, out)
			}
			want := sfdiskParts(t, img)
			f, _ = os.Open(img)
			defer func() { _ = f.Close() }()
			got, err := Read(f, 64<<20, 512)
			if err != nil {
				t.Fatal(err)
			}
			// The kernel shows an extended partition as a 1 KiB stub.
			for i := range want {
				for _, g := range got {
					if g.Number == want[i].Number && g.Size == 1024 && want[i].Size > 1024 {
						want[i].Size = 1024
					}
				}
			}
			if len(got) != len(want) {
				t.Fatalf("got %+v, sfdisk says %+v", got, want)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("partition %d: got %+v, sfdisk says %+v", i, got[i], want[i])
				}
			}
		})
	}
}

func TestReadPartitionsNone(t *testing.T) {
	if _, err := Read(bytes.NewReader(make([]byte, 4096)), 4096, 512); !errors.Is(err, ErrNoTable) {
		t.Errorf("blank disk: %v", err)
	}
	if _, err := Read(bytes.NewReader(nil), 0, 512); !errors.Is(err, ErrNoTable) {
		t.Errorf("empty disk: %v", err)
	}
}

func FuzzReadPartitions(f *testing.F) {
	mbr := make([]byte, 4096)
	mbr[510], mbr[511] = 0x55, 0xAA
	mbr[446+4] = 0x83
	mbr[446+8] = 1
	mbr[446+12] = 4
	f.Add(mbr)
	gpt := append([]byte(nil), mbr...)
	gpt[446+4] = 0xEE
	copy(gpt[512:], "EFI PART")
	f.Add(gpt)
	f.Fuzz(func(t *testing.T, b []byte) {
		parts, _ := Read(bytes.NewReader(b), int64(len(b)), 512)
		if len(parts) > MaxPartitions+4 {
			t.Fatalf("%d partitions", len(parts))
		}
		for _, p := range parts {
			if p.Start < 0 || p.Size <= 0 || p.Start+p.Size > int64(len(b)) {
				t.Fatalf("partition beyond the disk: %+v (disk %d)", p, len(b))
			}
		}
	})
}
