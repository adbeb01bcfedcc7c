// Package parttable reads GPT and MBR partition tables (with logical
// partitions in an extended one) from a disk image or device, so that
// loopvisor can provide loopNpM on kernels built without partition
// parsers.
//
// Design: Read takes an io.ReaderAt and the device's size and sector size;
// every offset and length read from the (container-written, hostile)
// table is bounds-checked against the device before use, chains of logical
// partitions are bounded, and a table that does not parse is ErrNoTable,
// never a panic. It is checked against sfdisk and fuzzed.
//
// When not to use this package: to write tables, or for anything but the
// partitions' numbers, start and size.
package parttable
