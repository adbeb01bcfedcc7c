package notify

import (
	"os"
	"testing"

	"github.com/loopvisor/loopvisor/internal/fdleak"
)

// TestMain fails the package if the tests leave file descriptors open. Run
// with listenerChildEnv set, the test binary is the child of
// TestBlockingListener instead.
func TestMain(m *testing.M) {
	if os.Getenv(listenerChildEnv) != "" {
		os.Exit(listenerChild())
	}
	os.Exit(fdleak.Run(m, "notify"))
}
