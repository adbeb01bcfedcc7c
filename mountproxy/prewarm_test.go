package mountproxy

import (
	"os"
	"strconv"
	"sync"
	"testing"
)

// TestPrewarmRacesFirstMount: Prewarm's background work (prewarm, run
// here on goroutines the test waits for) and a first FUSE mount's use of the same process-wide state (the helpers' seccomp
// filter, the execute-only copies, the jail file lists) at once; run with
// -race. Both must get usable results: the mount's copies are regular
// execute-only files and its list names the helper.
func TestPrewarmRacesFirstMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("execute-only copies need a tmpfs mount: root only")
	}
	path, err := jailHelper("fuse2fs")
	if err != nil {
		t.Skipf("no fuse2fs on the host: %v", err)
	}
	p := &Proxy{pol: Policy{Fuse: map[string]string{"ext4": "fuse2fs", "ext2": "fuse2fs"}, CacheDir: t.TempDir()}}
	t.Cleanup(resetExecOnly)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			prewarm([]string{"fuse2fs"}, p.pol.CacheDir)
		}()
		go func() {
			defer wg.Done()
			if _, err := helperProgram(); err != nil {
				t.Error(err)
			}
			files, err := jailFiles(path, p.pol.CacheDir)
			if err != nil {
				t.Error(err)
				return
			}
			found := false
			for _, f := range files {
				found = found || f == path
			}
			if !found {
				t.Errorf("jail file list without the helper %s: %q", path, files)
			}
			for _, src := range []string{path, "/proc/self/exe"} {
				f, err := execOnlyCopy(src)
				if err != nil {
					t.Error(err)
					continue
				}
				var st os.FileInfo
				if st, err = os.Stat("/proc/self/fd/" + strconv.Itoa(int(f.Fd()))); err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o111 {
					t.Errorf("execute-only copy of %s: %v %v", src, st, err)
				}
				_ = f.Close()
			}
		}()
	}
	wg.Wait()
}

// resetExecOnly drops the process's execute-only copies (the package's
// descriptor leak check counts them).
func resetExecOnly() {
	s := &execOnly
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.files {
		_ = f.fd.Close()
	}
	if s.root != nil {
		_ = s.root.Close()
	}
	s.root, s.files = nil, nil
}
