module github.com/loopvisor/loopvisor

go 1.26.8

require (
	github.com/seccomp/libseccomp-golang v0.11.1
	golang.org/x/sys v0.49.0
)

require (
	github.com/sirupsen/logrus v1.10.2 // indirect
	golang.org/x/term v0.47.0 // indirect
)
