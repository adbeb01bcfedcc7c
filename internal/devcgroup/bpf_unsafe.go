package devcgroup

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The bpf(2) attributes used here, each the prefix of union bpf_attr that
// its command reads (include/uapi/linux/bpf.h).

// bpfMapCreateAttr is bpf_attr for BPF_MAP_CREATE.
type bpfMapCreateAttr struct {
	mapType    uint32
	keySize    uint32
	valueSize  uint32
	maxEntries uint32
	mapFlags   uint32
}

// bpfMapElemAttr is bpf_attr for BPF_MAP_UPDATE_ELEM and BPF_MAP_DELETE_ELEM.
type bpfMapElemAttr struct {
	mapFd uint32
	_     uint32
	key   uint64
	value uint64
	flags uint64
}

// bpfProgLoadAttr is bpf_attr for BPF_PROG_LOAD.
type bpfProgLoadAttr struct {
	progType    uint32
	insnCnt     uint32
	insns       uint64
	license     uint64
	logLevel    uint32
	logSize     uint32
	logBuf      uint64
	kernVersion uint32
	progFlags   uint32
}

// bpfAttachAttr is bpf_attr for BPF_PROG_ATTACH and BPF_PROG_DETACH.
type bpfAttachAttr struct {
	targetFd     uint32
	attachBpfFd  uint32
	attachType   uint32
	attachFlags  uint32
	replaceBpfFd uint32
}

// bpfQueryAttr is bpf_attr for BPF_PROG_QUERY.
type bpfQueryAttr struct {
	targetFd    uint32
	attachType  uint32
	queryFlags  uint32
	attachFlags uint32
	progIDs     uint64
	progCnt     uint32
}

// bpfGetIDAttr is bpf_attr for BPF_PROG_GET_FD_BY_ID.
type bpfGetIDAttr struct {
	id        uint32
	nextID    uint32
	openFlags uint32
}

func bpf(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
		if errno == unix.EINTR || errno == unix.EAGAIN && cmd == unix.BPF_PROG_LOAD {
			continue
		}
		if errno != 0 {
			return -1, errno
		}
		return int(r), nil
	}
}

func bpfMapCreate(mapType, keySize, valueSize, maxEntries uint32) (*os.File, error) {
	a := bpfMapCreateAttr{mapType: mapType, keySize: keySize, valueSize: valueSize, maxEntries: maxEntries}
	fd, err := bpf(unix.BPF_MAP_CREATE, unsafe.Pointer(&a), unsafe.Sizeof(a))
	if err != nil {
		return nil, os.NewSyscallError("bpf BPF_MAP_CREATE", err)
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "bpf-map"), nil
}

func bpfMapUpdate(m *os.File, key, value []byte) error {
	a := bpfMapElemAttr{mapFd: uint32(m.Fd()), key: uint64(uintptr(unsafe.Pointer(&key[0]))),
		value: uint64(uintptr(unsafe.Pointer(&value[0]))), flags: unix.BPF_ANY}
	_, err := bpf(unix.BPF_MAP_UPDATE_ELEM, unsafe.Pointer(&a), unsafe.Sizeof(a))
	runtime.KeepAlive(key)
	runtime.KeepAlive(value)
	runtime.KeepAlive(m)
	if err != nil {
		return os.NewSyscallError("bpf BPF_MAP_UPDATE_ELEM", err)
	}
	return nil
}

func bpfMapDelete(m *os.File, key []byte) error {
	a := bpfMapElemAttr{mapFd: uint32(m.Fd()), key: uint64(uintptr(unsafe.Pointer(&key[0])))}
	_, err := bpf(unix.BPF_MAP_DELETE_ELEM, unsafe.Pointer(&a), unsafe.Sizeof(a))
	runtime.KeepAlive(key)
	runtime.KeepAlive(m)
	if err != nil {
		return os.NewSyscallError("bpf BPF_MAP_DELETE_ELEM", err)
	}
	return nil
}

// bpfProgLoad loads a BPF_PROG_TYPE_CGROUP_DEVICE program; on failure the
// error carries the verifier's log.
func bpfProgLoad(insns []uint64) (*os.File, error) {
	license := []byte("GPL\x00")
	log := make([]byte, 64<<10)
	a := bpfProgLoadAttr{progType: unix.BPF_PROG_TYPE_CGROUP_DEVICE, insnCnt: uint32(len(insns)),
		insns: uint64(uintptr(unsafe.Pointer(&insns[0]))), license: uint64(uintptr(unsafe.Pointer(&license[0]))),
		logLevel: 1, logSize: uint32(len(log)), logBuf: uint64(uintptr(unsafe.Pointer(&log[0])))}
	fd, err := bpf(unix.BPF_PROG_LOAD, unsafe.Pointer(&a), unsafe.Sizeof(a))
	runtime.KeepAlive(insns)
	runtime.KeepAlive(license)
	runtime.KeepAlive(log)
	if err != nil {
		n := 0
		for n < len(log) && log[n] != 0 {
			n++
		}
		return nil, &verifierError{err: os.NewSyscallError("bpf BPF_PROG_LOAD", err), log: string(log[:n])}
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "bpf-prog"), nil
}

type verifierError struct {
	err error
	log string
}

func (e *verifierError) Error() string { return e.err.Error() + "\n" + e.log }
func (e *verifierError) Unwrap() error { return e.err }

// bpfAttach attaches prog to the cgroup dir as a device program with flags;
// replace, if not nil, is the program it replaces (BPF_F_REPLACE).
func bpfAttach(dir, prog, replace *os.File, flags uint32) error {
	a := bpfAttachAttr{targetFd: uint32(dir.Fd()), attachBpfFd: uint32(prog.Fd()), attachType: unix.BPF_CGROUP_DEVICE, attachFlags: flags}
	if replace != nil {
		a.attachFlags |= unix.BPF_F_REPLACE
		a.replaceBpfFd = uint32(replace.Fd())
	}
	_, err := bpf(unix.BPF_PROG_ATTACH, unsafe.Pointer(&a), unsafe.Sizeof(a))
	runtime.KeepAlive(dir)
	runtime.KeepAlive(prog)
	runtime.KeepAlive(replace)
	if err != nil {
		return os.NewSyscallError("bpf BPF_PROG_ATTACH", err)
	}
	return nil
}

// bpfDetach detaches prog from the cgroup dir.
func bpfDetach(dir, prog *os.File) error {
	a := bpfAttachAttr{targetFd: uint32(dir.Fd()), attachBpfFd: uint32(prog.Fd()), attachType: unix.BPF_CGROUP_DEVICE}
	_, err := bpf(unix.BPF_PROG_DETACH, unsafe.Pointer(&a), unsafe.Sizeof(a))
	runtime.KeepAlive(dir)
	runtime.KeepAlive(prog)
	if err != nil {
		return os.NewSyscallError("bpf BPF_PROG_DETACH", err)
	}
	return nil
}

// bpfQuery returns the attach flags and ids of the device programs attached
// to the cgroup dir itself (not inherited ones).
func bpfQuery(dir *os.File) (uint32, []uint32, error) {
	ids := make([]uint32, 64) // BPF_CGROUP_MAX_PROGS
	a := bpfQueryAttr{targetFd: uint32(dir.Fd()), attachType: unix.BPF_CGROUP_DEVICE,
		progIDs: uint64(uintptr(unsafe.Pointer(&ids[0]))), progCnt: uint32(len(ids))}
	_, err := bpf(unix.BPF_PROG_QUERY, unsafe.Pointer(&a), unsafe.Sizeof(a))
	runtime.KeepAlive(ids)
	runtime.KeepAlive(dir)
	if err != nil {
		return 0, nil, os.NewSyscallError("bpf BPF_PROG_QUERY", err)
	}
	return a.attachFlags, ids[:a.progCnt], nil
}

// bpfProgByID opens the program with id.
func bpfProgByID(id uint32) (*os.File, error) {
	a := bpfGetIDAttr{id: id}
	fd, err := bpf(unix.BPF_PROG_GET_FD_BY_ID, unsafe.Pointer(&a), unsafe.Sizeof(a))
	if err != nil {
		return nil, os.NewSyscallError("bpf BPF_PROG_GET_FD_BY_ID", err)
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "bpf-prog"), nil
}

// bpfProgID returns the id of the program prog (BPF_OBJ_GET_INFO_BY_FD).
func bpfProgID(prog *os.File) (uint32, error) {
	var info [4]uint32 // struct bpf_prog_info begins with type, id
	a := struct {
		bpfFd   uint32
		infoLen uint32
		info    uint64
	}{uint32(prog.Fd()), uint32(unsafe.Sizeof(info)), uint64(uintptr(unsafe.Pointer(&info[0])))}
	_, err := bpf(unix.BPF_OBJ_GET_INFO_BY_FD, unsafe.Pointer(&a), unsafe.Sizeof(a))
	runtime.KeepAlive(info)
	runtime.KeepAlive(prog)
	if err != nil {
		return 0, os.NewSyscallError("bpf BPF_OBJ_GET_INFO_BY_FD", err)
	}
	return info[1], nil
}
