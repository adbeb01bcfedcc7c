package mountproxy

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The jail file list of a helper (ldd of the helper and of loopvisor, about
// 30 ms) is cached in the state dir across supervisor processes, so that
// the first FUSE mount of every `run` does not pay for it. An entry is used
// only while the helper, loopvisor and /etc/ld.so.cache are the very files
// it was made from (device, inode, size, mtime and ctime) and every file
// it lists is still a regular file: an upgrade of the helper or of a
// library (dpkg runs ldconfig, which rewrites ld.so.cache) misses.

// jailCacheName is the cache file in the state dir (host root only, 0700).
const jailCacheName = "jail-files.json"

// fileID identifies one version of a file.
type fileID struct {
	Dev, Ino, Size   uint64
	MtimeNs, CtimeNs int64
}

func idOf(path string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileID{}, err
	}
	return fileID{Dev: st.Dev, Ino: st.Ino, Size: uint64(st.Size),
		MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano()}, nil
}

// jailCacheEntry is the file list of one helper run with one loopvisor.
type jailCacheEntry struct {
	Helper, Exe, LdCache fileID
	Files                []string
}

// jailCacheKey names an entry: the helper's and loopvisor's paths.
func jailCacheKey(helper, exe string) string { return helper + "\x00" + exe }

// identities returns what an entry for helper and exe must match.
func identities(helper, exe string) (jailCacheEntry, error) {
	var e jailCacheEntry
	var err1, err2, err3 error
	e.Helper, err1 = idOf(helper)
	e.Exe, err2 = idOf(exe)
	e.LdCache, err3 = idOf("/etc/ld.so.cache")
	if errors.Is(err3, os.ErrNotExist) {
		err3 = nil // no cache: the loader searches its default paths
	}
	return e, errors.Join(err1, err2, err3)
}

// loadJailCache returns the cached list for helper and exe, if it is
// still valid.
func loadJailCache(dir, helper, exe string) ([]string, bool) {
	if dir == "" {
		return nil, false
	}
	b, err := os.ReadFile(filepath.Join(dir, jailCacheName))
	if err != nil {
		return nil, false
	}
	var all map[string]jailCacheEntry
	if json.Unmarshal(b, &all) != nil {
		return nil, false
	}
	e, ok := all[jailCacheKey(helper, exe)]
	if !ok {
		return nil, false
	}
	want, err := identities(helper, exe)
	if err != nil || want.Helper != e.Helper || want.Exe != e.Exe || want.LdCache != e.LdCache || len(e.Files) == 0 {
		return nil, false
	}
	for _, f := range e.Files {
		if !filepath.IsAbs(f) || !fileExists(f) {
			return nil, false
		}
	}
	return e.Files, true
}

// storeJailCache records files for helper and exe (best effort: a cache
// that cannot be written only costs the next process its ldd runs). Other
// supervisors share the state dir: the file is replaced with a rename, and
// an entry another one added meanwhile may be lost, which costs the same.
func storeJailCache(dir, helper, exe string, files []string) {
	if dir == "" {
		return
	}
	e, err := identities(helper, exe)
	if err != nil {
		return
	}
	e.Files = files
	path := filepath.Join(dir, jailCacheName)
	all := map[string]jailCacheEntry{}
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &all) // a damaged cache starts afresh
	}
	if len(all) > 64 {
		all = map[string]jailCacheEntry{}
	}
	all[jailCacheKey(helper, exe)] = e
	b, err := json.Marshal(all)
	if err != nil {
		return
	}
	tmp, err := os.CreateTemp(dir, jailCacheName+".*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(b)
	if err := errors.Join(werr, tmp.Close()); err != nil {
		_ = os.Remove(tmp.Name())
		return
	}
	if os.Rename(tmp.Name(), path) != nil {
		_ = os.Remove(tmp.Name())
	}
}
