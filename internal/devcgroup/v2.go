package devcgroup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// cgroup v2: device access is decided by BPF_CGROUP_DEVICE programs, and
// every effective program must allow (see docs/cgroup-v2.md). A grant
// therefore replaces the runtime's program, atomically (BPF_F_REPLACE), by
// one of the agent's that allows what its map holds and otherwise
// tail-calls the runtime's program, so every rule of the runtime still
// decides everything else. Revoking deletes the map entry: the runtime's
// answer is back, whatever it was.

// BPF encoding (include/uapi/linux/bpf.h, bpf_common.h).
const (
	bpfMovX   = 0xbf // BPF_ALU64|BPF_MOV|BPF_X
	bpfMovK   = 0xb7 // BPF_ALU64|BPF_MOV|BPF_K
	bpfLdxW   = 0x61 // BPF_LDX|BPF_MEM|BPF_W
	bpfStxW   = 0x63 // BPF_STX|BPF_MEM|BPF_W
	bpfRshK   = 0x77 // BPF_ALU64|BPF_RSH|BPF_K
	bpfAndK   = 0x57 // BPF_ALU64|BPF_AND|BPF_K
	bpfAndX   = 0x5f // BPF_ALU64|BPF_AND|BPF_X
	bpfAddK   = 0x07 // BPF_ALU64|BPF_ADD|BPF_K
	bpfLdDW   = 0x18 // BPF_LD|BPF_IMM|BPF_DW (two slots)
	bpfJeqK   = 0x15 // BPF_JMP|BPF_JEQ|BPF_K
	bpfJneK   = 0x55 // BPF_JMP|BPF_JNE|BPF_K
	bpfJneX   = 0x5d // BPF_JMP|BPF_JNE|BPF_X
	bpfCall   = 0x85 // BPF_JMP|BPF_CALL
	bpfExit   = 0x95 // BPF_JMP|BPF_EXIT
	pseudoMap = 1    // BPF_PSEUDO_MAP_FD

	fnMapLookup = 1  // BPF_FUNC_map_lookup_elem
	fnTailCall  = 12 // BPF_FUNC_tail_call

	devBlock = 1 // BPF_DEVCG_DEV_BLOCK
	devChar  = 2 // BPF_DEVCG_DEV_CHAR
	accRead  = 2 // BPF_DEVCG_ACC_READ
	accWrite = 4 // BPF_DEVCG_ACC_WRITE
)

func insn(code, dst, src uint8, off int16, imm int32) uint64 {
	return uint64(code) | uint64(dst|src<<4)<<8 | uint64(uint16(off))<<16 | uint64(uint32(imm))<<32
}

// ldMap is the two-slot load of a map fd into dst.
func ldMap(dst uint8, fd int) []uint64 {
	return []uint64{insn(bpfLdDW, dst, pseudoMap, 0, int32(fd)), 0}
}

// grantProgram returns the agent's device program (ctx is struct
// bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor}):
//
//	key = {access_type & 0xffff, major, minor}
//	v = lookup(allow, key)
//	if v && (access & *v) == access: return 1
//	tail_call(ctx, runtime, 0)   // the runtime's answer
//	return 0                     // no runtime program: deny
func grantProgram(allowMap, progArray int) []uint64 {
	p := []uint64{
		insn(bpfMovX, 6, 1, 0, 0),  // r6 = ctx
		insn(bpfLdxW, 2, 6, 0, 0),  // r2 = access_type
		insn(bpfMovX, 7, 2, 0, 0),  // r7 = access_type
		insn(bpfRshK, 7, 0, 0, 16), // r7 = access bits
		insn(bpfAndK, 2, 0, 0, 0xffff),
		insn(bpfStxW, 10, 2, -12, 0), // key.type
		insn(bpfLdxW, 3, 6, 4, 0),
		insn(bpfStxW, 10, 3, -8, 0), // key.major
		insn(bpfLdxW, 3, 6, 8, 0),
		insn(bpfStxW, 10, 3, -4, 0), // key.minor
	}
	p = append(p, ldMap(1, allowMap)...)
	p = append(p,
		insn(bpfMovX, 2, 10, 0, 0),
		insn(bpfAddK, 2, 0, 0, -12),
		insn(bpfCall, 0, 0, 0, fnMapLookup),
		insn(bpfJeqK, 0, 0, 6, 0), // no entry: to the tail call
		insn(bpfLdxW, 1, 0, 0, 0), // r1 = allowed access
		insn(bpfMovX, 2, 7, 0, 0),
		insn(bpfAndX, 2, 1, 0, 0),
		insn(bpfJneX, 2, 7, 2, 0), // asks for more than allowed: to the tail call
		insn(bpfMovK, 0, 0, 0, 1),
		insn(bpfExit, 0, 0, 0, 0),
		insn(bpfMovX, 1, 6, 0, 0), // tail call
	)
	p = append(p, ldMap(2, progArray)...)
	p = append(p,
		insn(bpfMovK, 3, 0, 0, 0),
		insn(bpfCall, 0, 0, 0, fnTailCall),
		insn(bpfMovK, 0, 0, 0, 0),
		insn(bpfExit, 0, 0, 0, 0),
	)
	return p
}

// filterProgram returns a program that allows exactly devs (any access)
// and denies everything else, as a runtime's device filter does.
func filterProgram(devs []Device) []uint64 {
	p := []uint64{
		insn(bpfLdxW, 2, 1, 0, 0),
		insn(bpfAndK, 2, 0, 0, 0xffff),
		insn(bpfLdxW, 3, 1, 4, 0),
		insn(bpfLdxW, 4, 1, 8, 0),
	}
	for _, d := range devs {
		p = append(p,
			insn(bpfJneK, 2, 0, 4, int32(bpfType(d.Type))),
			insn(bpfJneK, 3, 0, 3, int32(d.Major)),
			insn(bpfJneK, 4, 0, 2, int32(d.Minor)),
			insn(bpfMovK, 0, 0, 0, 1),
			insn(bpfExit, 0, 0, 0, 0),
		)
	}
	return append(p, insn(bpfMovK, 0, 0, 0, 0), insn(bpfExit, 0, 0, 0, 0))
}

func bpfType(t byte) uint32 {
	if t == 'b' {
		return devBlock
	}
	return devChar
}

func mapKey(d Device) []byte {
	k := make([]byte, 12)
	binary.NativeEndian.PutUint32(k[0:], bpfType(d.Type))
	binary.NativeEndian.PutUint32(k[4:], d.Major)
	binary.NativeEndian.PutUint32(k[8:], d.Minor)
	return k
}

// AttachFilter attaches to the cgroup v2 directory dir a device program that
// allows exactly devs, with BPF_F_ALLOW_MULTI, as runc does for a
// container; detach removes it. For tests and tools that need a
// runtime-like filter where no runtime made one.
func AttachFilter(dir string, devs []Device) (detach func() error, err error) {
	d, err := os.OpenFile(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	prog, err := bpfProgLoad(filterProgram(devs))
	if err != nil {
		_ = d.Close()
		return nil, err
	}
	if err := bpfAttach(d, prog, nil, unix.BPF_F_ALLOW_MULTI); err != nil {
		_ = prog.Close()
		_ = d.Close()
		return nil, err
	}
	return func() error {
		err := bpfDetach(d, prog)
		return errors.Join(err, prog.Close(), d.Close())
	}, nil
}

// bpfGrant is the v2 state of one container's cgroup.
type bpfGrant struct {
	dir *os.File // the cgroup v2 directory (O_RDONLY: bpf wants a real fd)
	// Set once the agent's program replaced the runtime's:
	runtime *os.File // the runtime's program
	ours    *os.File
	oursID  uint32
	allow   *os.File // hash map {type, major, minor} -> access mask
	progs   *os.File // prog array: [0] = the runtime's program
	// granted is what the map should hold: installed again into a new
	// map when the agent's program had to be installed again.
	granted map[Device]bool
}

// errNoProgram says the cgroup has no device program of its own: v2
// restricts nothing there, and there is nothing to grant.
var errNoProgram = errors.New("no device program attached")

// install replaces the runtime's program by the agent's, unless done and
// still in place. It fails (and grants nothing) unless exactly one program
// is attached with BPF_F_ALLOW_MULTI: another layout is not the runtime's
// alone to rewrite.
func (g *bpfGrant) install() error {
	flags, ids, err := bpfQuery(g.dir)
	if err != nil {
		return err
	}
	if g.ours != nil {
		for _, id := range ids {
			if id == g.oursID {
				return nil
			}
		}
		// The runtime replaced or detached ours (e.g. runc update):
		// start again from what is there now.
		g.release()
	}
	switch {
	case len(ids) == 0:
		return errNoProgram
	case len(ids) > 1:
		return fmt.Errorf("%d device programs attached to the cgroup; the agent replaces only a runtime's single one", len(ids))
	case flags&unix.BPF_F_ALLOW_MULTI == 0:
		return errors.New("the cgroup's device program was attached without BPF_F_ALLOW_MULTI; it cannot be replaced")
	}
	rt, err := bpfProgByID(ids[0])
	if err != nil {
		return err
	}
	allow, err := bpfMapCreate(unix.BPF_MAP_TYPE_HASH, 12, 4, 256)
	if err != nil {
		_ = rt.Close()
		return err
	}
	progs, err := bpfMapCreate(unix.BPF_MAP_TYPE_PROG_ARRAY, 4, 4, 1)
	if err != nil {
		_ = rt.Close()
		_ = allow.Close()
		return err
	}
	val := make([]byte, 4)
	binary.NativeEndian.PutUint32(val, uint32(rt.Fd()))
	key := make([]byte, 4)
	ours, err := func() (*os.File, error) {
		if err := bpfMapUpdate(progs, key, val); err != nil {
			return nil, err
		}
		p, err := bpfProgLoad(grantProgram(int(allow.Fd()), int(progs.Fd())))
		if err != nil {
			return nil, err
		}
		id, err := bpfProgID(p)
		if err == nil {
			g.oursID = id
			err = bpfAttach(g.dir, p, rt, unix.BPF_F_ALLOW_MULTI)
		}
		if err != nil {
			_ = p.Close()
			return nil, err
		}
		return p, nil
	}()
	if err != nil {
		_ = rt.Close()
		_ = allow.Close()
		_ = progs.Close()
		return err
	}
	g.runtime, g.ours, g.allow, g.progs = rt, ours, allow, progs
	var errs []error
	for d := range g.granted {
		errs = append(errs, bpfMapUpdate(g.allow, mapKey(d), accessValue()))
	}
	return errors.Join(errs...)
}

func accessValue() []byte {
	val := make([]byte, 4)
	binary.NativeEndian.PutUint32(val, accRead|accWrite)
	return val
}

// grant allows d. It reports false when v2 restricts nothing here.
func (g *bpfGrant) grant(d Device) (bool, error) {
	if err := g.install(); err != nil {
		if errors.Is(err, errNoProgram) {
			return false, nil
		}
		return false, err
	}
	if g.granted == nil {
		g.granted = map[Device]bool{}
	}
	g.granted[d] = true
	return true, bpfMapUpdate(g.allow, mapKey(d), accessValue())
}

// revoke takes d back: the runtime's program decides it again.
func (g *bpfGrant) revoke(d Device) error {
	delete(g.granted, d)
	if g.allow == nil {
		return nil
	}
	err := bpfMapDelete(g.allow, mapKey(d))
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// restore puts the runtime's program back in place of the agent's (if the
// agent's is still attached) and releases everything.
func (g *bpfGrant) restore() error {
	var err error
	if g.ours != nil {
		if _, ids, qerr := bpfQuery(g.dir); qerr == nil {
			for _, id := range ids {
				if id == g.oursID {
					err = bpfAttach(g.dir, g.runtime, g.ours, unix.BPF_F_ALLOW_MULTI)
				}
			}
		}
	}
	g.release()
	return errors.Join(err, g.dir.Close())
}

func (g *bpfGrant) release() {
	for _, f := range []*os.File{g.ours, g.runtime, g.allow, g.progs} {
		if f != nil {
			_ = f.Close()
		}
	}
	g.ours, g.runtime, g.allow, g.progs, g.oursID = nil, nil, nil, nil, 0
}
