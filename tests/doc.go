// Package tests holds loopvisor's acceptance tests. They run as root against
// the real kernel: real loop devices, real util-linux, busybox and e2fsprogs,
// inside sandboxes whose root is mapped to an unprivileged host uid
// (100000), never to host root. Every test shows the same command failing
// in the same namespaces without loopvisor (`run --bare`), and every test
// leaves `losetup -a`, the loop devices in sysfs and the mount table as it
// found them; TestMain fails the run if anything leaked.
package tests
