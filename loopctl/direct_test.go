package loopctl

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// directReader reads whole aligned blocks and hands out exactly the bytes
// asked for, with io.EOF for a read past the end, as os.File.ReadAt does.
func TestDirectReader(t *testing.T) {
	data := make([]byte, 3*4096+100)
	for i := range data {
		data[i] = byte(i * 7)
	}
	p := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	d := directReader{f: f, block: 4096}
	for _, tt := range []struct {
		off int64
		n   int
	}{{0, 512}, {510, 4}, {4095, 2}, {4096, 8192}, {100, 3 * 4096}, {int64(len(data)) - 10, 10}, {int64(len(data)) - 10, 20}, {int64(len(data)), 1}, {int64(len(data)) + 5000, 1}} {
		buf := make([]byte, tt.n)
		n, err := d.ReadAt(buf, tt.off)
		wn, werr := f.ReadAt(make([]byte, tt.n), tt.off)
		if n != wn || (err == nil) != (werr == nil) || (err != nil && !errors.Is(err, io.EOF)) {
			t.Errorf("ReadAt(%d, %d) = %d, %v; want %d, %v", tt.n, tt.off, n, err, wn, werr)
			continue
		}
		if n > 0 && !bytes.Equal(buf[:n], data[tt.off:tt.off+int64(n)]) {
			t.Errorf("ReadAt(%d, %d): wrong bytes", tt.n, tt.off)
		}
	}
}
