package registry

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

func openTestRegistry(t *testing.T) *Registry {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	r, err := Open(dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return r
}

func TestOpenRegistry(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.Dir != dir {
		t.Errorf("Dir = %q, want %q", r.Dir, dir)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", st.Mode().Perm())
	}
	if st, err := os.Stat(filepath.Join(dir, "instances")); err != nil || !st.IsDir() {
		t.Errorf("instances dir: %v", err)
	}
	// An existing, too open directory is tightened.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("reopened state dir mode %v, want 0700", st.Mode().Perm())
	}
	// A state dir that is a file fails.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(file); err == nil {
		t.Errorf("Open on a regular file succeeded")
	}
}

func TestRegistryLock(t *testing.T) {
	r := openTestRegistry(t)
	unlock, err := r.Lock()
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	unlock, err = r.Lock()
	if err != nil {
		t.Fatalf("relock: %v", err)
	}
	unlock()
}

func journalsByID(t *testing.T, r *Registry) map[string]*Journal {
	t.Helper()
	js, errs := r.Journals()
	if len(errs) != 0 {
		t.Fatalf("Journals errors: %v", errs)
	}
	m := map[string]*Journal{}
	for _, j := range js {
		m[j.ID] = j
	}
	return m
}

func TestJournalRoundTrip(t *testing.T) {
	r := openTestRegistry(t)
	if js, errs := r.Journals(); len(js) != 0 || len(errs) != 0 {
		t.Fatalf("empty registry: %v, %v", js, errs)
	}
	a := &Journal{ID: "a", Pid: 100, StartTime: 12345, HostUID: 1000, Devices: []int{9, 3, 7}}
	b := &Journal{ID: "b", Pid: 200, StartTime: 1, HostUID: 1001}
	for _, j := range []*Journal{a, b} {
		if err := r.Write(j); err != nil {
			t.Fatalf("Write(%s): %v", j.ID, err)
		}
	}
	if !sort.IntsAreSorted(a.Devices) {
		t.Errorf("Write did not sort devices: %v", a.Devices)
	}
	m := journalsByID(t, r)
	if len(m) != 2 {
		t.Fatalf("got %d journals, want 2", len(m))
	}
	want := Journal{ID: "a", Pid: 100, StartTime: 12345, HostUID: 1000, Devices: []int{3, 7, 9}}
	if !reflect.DeepEqual(*m["a"], want) {
		t.Errorf("journal a = %+v, want %+v", *m["a"], want)
	}
	if got := m["b"]; got.Pid != 200 || got.StartTime != 1 || got.HostUID != 1001 || len(got.Devices) != 0 {
		t.Errorf("journal b = %+v", *got)
	}
	// Files are private and no temporary file is left behind.
	ents, err := os.ReadDir(filepath.Join(r.Dir, "instances"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temporary file left: %s", e.Name())
		}
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", e.Name(), info.Mode().Perm())
		}
	}

	// Rewrite replaces.
	a.Devices = append(a.Devices, 1)
	if err := r.Write(a); err != nil {
		t.Fatal(err)
	}
	if got := journalsByID(t, r)["a"].Devices; !reflect.DeepEqual(got, []int{1, 3, 7, 9}) {
		t.Errorf("rewritten devices = %v", got)
	}

	if err := r.Delete("a"); err != nil {
		t.Fatal(err)
	}
	m = journalsByID(t, r)
	if _, ok := m["a"]; ok || len(m) != 1 {
		t.Errorf("after Delete(a): %v", m)
	}
	// Deleting what is not there is not an error.
	if err := r.Delete("a"); err != nil {
		t.Errorf("second Delete(a): %v", err)
	}
	if err := r.Delete("never"); err != nil {
		t.Errorf("Delete(never): %v", err)
	}
}

func TestUIDUse(t *testing.T) {
	r := openTestRegistry(t)
	if n := r.UIDUse(1000); n != 0 {
		t.Errorf("empty registry: UIDUse = %d", n)
	}
	for _, j := range []*Journal{
		{ID: "x1", HostUID: 1000, Devices: []int{1, 2}},
		{ID: "x2", HostUID: 1000, Devices: []int{5}},
		{ID: "x3", HostUID: 1000},
		{ID: "y1", HostUID: 2000, Devices: []int{3, 4, 6, 8}},
	} {
		if err := r.Write(j); err != nil {
			t.Fatal(err)
		}
	}
	for uid, want := range map[int]int{1000: 3, 2000: 4, 0: 0, 3000: 0} {
		if got := r.UIDUse(uid); got != want {
			t.Errorf("UIDUse(%d) = %d, want %d", uid, got, want)
		}
	}
	if err := r.Delete("x1"); err != nil {
		t.Fatal(err)
	}
	if got := r.UIDUse(1000); got != 1 {
		t.Errorf("after Delete(x1): UIDUse(1000) = %d, want 1", got)
	}
}

func TestJournalsCorrupt(t *testing.T) {
	r := openTestRegistry(t)
	if err := r.Write(&Journal{ID: "good", HostUID: 1000, Devices: []int{1}}); err != nil {
		t.Fatal(err)
	}
	inst := filepath.Join(r.Dir, "instances")
	// A torn journal: its devices are not guessed at.
	if err := os.WriteFile(filepath.Join(inst, "bad.json"), []byte(`{"id":"bad","host_uid":1000,"devices":[2,3`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Wrong types.
	if err := os.WriteFile(filepath.Join(inst, "typed.json"), []byte(`{"id":"typed","host_uid":"1000"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Not journals: ignored without an error.
	for _, name := range []string{"stale.json.tmp", "README", "x.jso"} {
		if err := os.WriteFile(filepath.Join(inst, name), []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	js, errs := r.Journals()
	if len(js) != 1 || js[0].ID != "good" {
		t.Errorf("journals = %v, want only good", js)
	}
	if len(errs) != 2 {
		t.Fatalf("errors = %v, want 2", errs)
	}
	for _, err := range errs {
		if !strings.Contains(err.Error(), "bad.json") && !strings.Contains(err.Error(), "typed.json") {
			t.Errorf("error does not name the journal: %v", err)
		}
	}
	if got := r.UIDUse(1000); got != 1 {
		t.Errorf("UIDUse(1000) = %d, want 1 (corrupt journal not counted)", got)
	}
	// A directory named like a journal cannot be read: an error, not a crash.
	if err := os.Mkdir(filepath.Join(inst, "dir.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, errs := r.Journals(); len(errs) != 3 {
		t.Errorf("with a dir.json: errors = %v, want 3", errs)
	}
}

func TestJournalsMissingDir(t *testing.T) {
	r := &Registry{Dir: filepath.Join(t.TempDir(), "nope")}
	js, errs := r.Journals()
	if len(js) != 0 || len(errs) != 1 {
		t.Errorf("missing dir: %v, %v", js, errs)
	}
	if n := r.UIDUse(0); n != 0 {
		t.Errorf("missing dir: UIDUse = %d", n)
	}
}

func TestProcStartTime(t *testing.T) {
	st, err := ProcStartTime(os.Getpid())
	if err != nil {
		t.Fatalf("ProcStartTime(self): %v", err)
	}
	if st == 0 {
		t.Errorf("ProcStartTime(self) = 0")
	}
	again, err := ProcStartTime(os.Getpid())
	if err != nil || again != st {
		t.Errorf("ProcStartTime(self) not stable: %d then %d, %v", st, again, err)
	}
	// pid 1 started no later than we did.
	if one, err := ProcStartTime(1); err == nil && one > st {
		t.Errorf("pid 1 start time %d after ours %d", one, st)
	}
	for _, pid := range []int{-1, 1 << 30, 0x7fffffff} {
		if _, err := ProcStartTime(pid); err == nil {
			t.Errorf("ProcStartTime(%d) succeeded", pid)
		}
	}
}

func TestJournalAlive(t *testing.T) {
	st, err := ProcStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !(&Journal{Pid: os.Getpid(), StartTime: st}).Alive() {
		t.Errorf("self with its own start time is not alive")
	}
	for _, bogus := range []uint64{0, st + 1, st - 1, ^uint64(0)} {
		if (&Journal{Pid: os.Getpid(), StartTime: bogus}).Alive() {
			t.Errorf("self with start time %d (real %d) is alive", bogus, st)
		}
	}
	if (&Journal{Pid: 1 << 30, StartTime: st}).Alive() {
		t.Errorf("nonexistent pid is alive")
	}
}
