package view

import (
	"os"
	"testing"

	"github.com/loopvisor/loopvisor/internal/fdleak"
)

// TestMain fails the package if the tests leave file descriptors open.
func TestMain(m *testing.M) { os.Exit(fdleak.Run(m, "view")) }
