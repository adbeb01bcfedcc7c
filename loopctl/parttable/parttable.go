package parttable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
)

// Partition is one entry of a disk's partition table, in bytes.
type Partition struct {
	Number int // as the kernel numbers it: GPT slot+1; MBR 1-4 primary, 5+ logical
	Start  int64
	Size   int64
}

// Limits of what Read accepts from an untrusted image.
const (
	MaxPartitions  = 256
	maxLogical     = 128
	maxGPTEntryLen = 4096
)

// ErrNoTable means the disk has neither a GPT nor an MBR partition table.
var ErrNoTable = errors.New("no partition table")

// Read reads the partition table of a disk of size bytes with
// logical sector size sector (a power of two from 512 to 65536, as
// LOOP_SET_BLOCK_SIZE accepts), as the kernel's efi and msdos
// parsers would: GPT if the protective MBR says so and a header (primary or
// backup) checks out, else MBR with extended partitions. It is a decoder of
// untrusted image data: every offset and count is bounded by the disk.
func Read(r io.ReaderAt, size int64, sector int64) ([]Partition, error) {
	if sector < 512 || sector > 65536 || sector&(sector-1) != 0 {
		return nil, errors.New("unsupported sector size")
	}
	mbr := make([]byte, 512)
	if size < 512 {
		return nil, ErrNoTable
	}
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return nil, err
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return nil, ErrNoTable
	}
	for i := 0; i < 4; i++ {
		if mbr[446+16*i+4] == 0xEE {
			if parts, err := readGPT(r, size, sector); err == nil {
				return parts, nil
			}
			return nil, ErrNoTable // protective MBR without a valid GPT: the kernel shows nothing
		}
	}
	return readMBR(r, mbr, size, sector)
}

func within(start, length, size int64) bool {
	return start >= 0 && length > 0 && start < size && length <= size-start
}

func readMBR(r io.ReaderAt, mbr []byte, size, sector int64) ([]Partition, error) {
	le := binary.LittleEndian
	var parts []Partition
	var extStart, extSize int64
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i:]
		typ := e[4]
		start := int64(le.Uint32(e[8:])) * sector
		length := int64(le.Uint32(e[12:])) * sector
		if typ == 0 || length == 0 {
			continue
		}
		if !within(start, length, size) {
			continue
		}
		if typ == 0x05 || typ == 0x0F || typ == 0x85 {
			// The kernel shows the extended partition as a 1 KiB stub.
			parts = append(parts, Partition{Number: i + 1, Start: start, Size: min64(length, 2*512)})
			if extStart == 0 {
				extStart, extSize = start, length
			}
			continue
		}
		parts = append(parts, Partition{Number: i + 1, Start: start, Size: length})
	}
	if extStart > 0 {
		parts = append(parts, readLogical(r, extStart, extSize, size, sector)...)
	}
	if len(parts) == 0 {
		return nil, nil
	}
	return parts, nil
}

func min64(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

// readLogical follows the chain of extended boot records.
func readLogical(r io.ReaderAt, extStart, extSize, size, sector int64) []Partition {
	le := binary.LittleEndian
	var parts []Partition
	ebr := make([]byte, 512)
	next := extStart
	seen := map[int64]bool{}
	for n := 5; n < 5+maxLogical; n++ {
		if seen[next] || !within(next, 512, size) {
			break
		}
		seen[next] = true
		if _, err := r.ReadAt(ebr, next); err != nil || ebr[510] != 0x55 || ebr[511] != 0xAA {
			break
		}
		e0, e1 := ebr[446:], ebr[462:]
		if e0[4] != 0 {
			start := next + int64(le.Uint32(e0[8:]))*sector
			length := int64(le.Uint32(e0[12:])) * sector
			if within(start, length, size) && start >= extStart && start-extStart < extSize {
				parts = append(parts, Partition{Number: n, Start: start, Size: length})
			}
		}
		rel := int64(le.Uint32(e1[8:])) * sector
		if e1[4] == 0 || rel == 0 {
			break
		}
		next = extStart + rel
	}
	return parts
}

var gptSig = []byte("EFI PART")

func readGPT(r io.ReaderAt, size, sector int64) ([]Partition, error) {
	last := size/sector - 1
	parts, err := readGPTAt(r, 1, size, sector)
	if err != nil && last > 1 {
		parts, err = readGPTAt(r, last, size, sector) // the backup header
	}
	return parts, err
}

func readGPTAt(r io.ReaderAt, lba, size, sector int64) ([]Partition, error) {
	le := binary.LittleEndian
	hdr := make([]byte, sector)
	if !within(lba*sector, sector, size) {
		return nil, errors.New("gpt header beyond the disk")
	}
	if _, err := r.ReadAt(hdr, lba*sector); err != nil {
		return nil, err
	}
	if !bytes.Equal(hdr[:8], gptSig) {
		return nil, errors.New("no gpt signature")
	}
	hsize := int64(le.Uint32(hdr[12:]))
	if hsize < 92 || hsize > sector {
		return nil, errors.New("bad gpt header size")
	}
	h := append([]byte(nil), hdr[:hsize]...)
	want := le.Uint32(h[16:])
	binary.LittleEndian.PutUint32(h[16:], 0)
	if crc32.ChecksumIEEE(h) != want {
		return nil, errors.New("bad gpt header crc")
	}
	if int64(le.Uint64(hdr[24:])) != lba {
		return nil, errors.New("gpt header in the wrong place")
	}
	first, lastUsable := int64(le.Uint64(hdr[40:])), int64(le.Uint64(hdr[48:]))
	entLBA := int64(le.Uint64(hdr[72:]))
	count := int64(le.Uint32(hdr[80:]))
	esize := int64(le.Uint32(hdr[84:]))
	if esize < 128 || esize > maxGPTEntryLen || esize%8 != 0 || count <= 0 || count > MaxPartitions*4 {
		return nil, errors.New("bad gpt entry array")
	}
	if entLBA < 0 || entLBA > size/sector || !within(entLBA*sector, count*esize, size) {
		return nil, errors.New("gpt entries beyond the disk")
	}
	ents := make([]byte, count*esize)
	if _, err := r.ReadAt(ents, entLBA*sector); err != nil {
		return nil, err
	}
	if crc32.ChecksumIEEE(ents) != le.Uint32(hdr[88:]) {
		return nil, errors.New("bad gpt entries crc")
	}
	var parts []Partition
	zero := make([]byte, 16)
	for i := int64(0); i < count && len(parts) < MaxPartitions; i++ {
		e := ents[i*esize:]
		if bytes.Equal(e[:16], zero) {
			continue
		}
		s, l := int64(le.Uint64(e[32:])), int64(le.Uint64(e[40:]))
		if s < first || l < s || l > lastUsable || s > size/sector {
			continue
		}
		start, length := s*sector, (l-s+1)*sector
		if !within(start, length, size) {
			continue
		}
		parts = append(parts, Partition{Number: int(i) + 1, Start: start, Size: length})
	}
	return parts, nil
}
