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
	switch os.Getenv(listenerChildEnv) {
	case "":
	case fileCacheChild:
		os.Exit(fileChild())
	case fileBenchMode:
		os.Exit(fileBenchChild())
	default:
		os.Exit(listenerChild())
	}
	os.Exit(fdleak.Run(m, "notify"))
}
