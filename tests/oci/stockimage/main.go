// Command stockimage builds (or finds in the cache) the stock Debian
// images the acceptance tests run, so that a test run only unpacks them:
//
//	go run ./tests/oci/stockimage [-boot] bookworm trixie
//
// -boot also builds the first distribution's image with oci.BootPackages,
// the root of the bootable-image test.
// It prints each image's tarball. The cache is $LOOPVISOR_CACHE, else
// /var/cache/loopvisor-test; delete a tarball to rebuild it. With -unpack
// DIR it also unpacks the first image into DIR with owners shifted by
// 100000, as the tests do, and says how long that took.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/loopvisor/loopvisor/tests/oci"
)

func main() {
	unpack := flag.String("unpack", "", "unpack the first image into this directory (owners +100000)")
	boot := flag.Bool("boot", false, "also build the first image with oci.BootPackages (the bootable-image test's root)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: stockimage [-unpack DIR] [-boot] DIST...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	for i, dist := range flag.Args() {
		start := time.Now()
		img, err := oci.StockImage(dist)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%s %s (%.1fs)\n", dist, img, time.Since(start).Seconds())
		if i == 0 && *boot {
			start := time.Now()
			bimg, err := oci.StockImageWith(dist, oci.BootPackages...)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			fmt.Printf("%s+boot %s (%.1fs)\n", dist, bimg, time.Since(start).Seconds())
		}
		if i == 0 && *unpack != "" {
			start = time.Now()
			if err := oci.UnpackShifted(img, *unpack, oci.HostID); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			fmt.Printf("unpacked into %s (%.1fs)\n", *unpack, time.Since(start).Seconds())
		}
	}
}
