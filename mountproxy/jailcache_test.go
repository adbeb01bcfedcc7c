package mountproxy

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestJailCache: a stored list comes back while the helper, loopvisor and
// every listed file are unchanged, and is ignored once one of them changes
// or a listed file is gone.
func TestJailCache(t *testing.T) {
	dir := t.TempDir()
	helper, exe, lib := filepath.Join(dir, "helper"), filepath.Join(dir, "exe"), filepath.Join(dir, "lib.so")
	for _, p := range []string{helper, exe, lib} {
		if err := os.WriteFile(p, []byte(p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := []string{helper, lib}
	if _, ok := loadJailCache(dir, helper, exe); ok {
		t.Fatal("hit in an empty cache")
	}
	storeJailCache(dir, helper, exe, files)
	got, ok := loadJailCache(dir, helper, exe)
	if !ok || len(got) != 2 || got[0] != helper || got[1] != lib {
		t.Fatalf("after store: %v %v, want %v", got, ok, files)
	}
	if _, ok := loadJailCache("", helper, exe); ok {
		t.Error("hit without a cache dir")
	}
	if _, ok := loadJailCache(dir, exe, helper); ok {
		t.Error("hit for another helper")
	}

	// A new version of the helper (same path) misses.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(helper, later, later); err != nil {
		t.Fatal(err)
	}
	if _, ok := loadJailCache(dir, helper, exe); ok {
		t.Error("hit after the helper changed")
	}
	storeJailCache(dir, helper, exe, files)
	if _, ok := loadJailCache(dir, helper, exe); !ok {
		t.Fatal("miss after storing again")
	}
	// A listed library that is gone misses.
	if err := os.Remove(lib); err != nil {
		t.Fatal(err)
	}
	if _, ok := loadJailCache(dir, helper, exe); ok {
		t.Error("hit with a listed file gone")
	}
	// A damaged cache file is a miss, and is replaced by the next store.
	if err := os.WriteFile(filepath.Join(dir, jailCacheName), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok := loadJailCache(dir, helper, exe); ok {
		t.Error("hit in a damaged cache")
	}
	storeJailCache(dir, helper, exe, []string{helper})
	if _, ok := loadJailCache(dir, helper, exe); !ok {
		t.Error("miss after replacing a damaged cache")
	}
}
