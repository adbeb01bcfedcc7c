# loopvisor: private loop devices for unprivileged containers.
GO      ?= go
BIN     := bin/loopvisor
PKGS    := ./notify/... ./loopctl/... ./supervisor/... ./mountproxy/... ./cmd/... ./internal/...
FUZZTIME ?= 15s

GOLANGCI ?= $(shell $(GO) env GOPATH)/bin/golangci-lint

.PHONY: help deps build demo test unit integration vet lint fmt fuzz bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

deps: ## install the system packages and Go modules loopvisor needs (Debian; as root)
	@./scripts/install-deps.sh

build: ## build bin/loopvisor
	$(GO) build -o $(BIN) ./cmd/loopvisor

demo: deps build ## unprivileged sandbox: make an image, attach it, losetup -a, detach
	@./examples/demo.sh $(BIN)

vet: ## gofmt and go vet
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

lint: ## golangci-lint (errcheck, errorlint, staticcheck, unparam, forcetypeassert; see .golangci.yml)
	@test -x $(GOLANGCI) || { echo "golangci-lint missing: run make deps"; exit 1; }
	$(GOLANGCI) run ./...

unit: ## unit and fuzz-seed tests (no root needed)
	$(GO) test -count=1 $(PKGS)

integration: build ## real-kernel tests (root): losetup, busybox, differential, isolation, limits, gc
	$(GO) test -count=1 -p 1 -timeout 20m ./tests/...

test: vet lint unit integration ## everything CI runs

fuzz: ## run every fuzz target for FUZZTIME each
	@for p in ./internal/linux/ ./loopctl/ ./loopctl/parttable/ ./notify/ ./supervisor/ ./mountproxy/; do \
		for t in $$($(GO) test -list 'Fuzz.*' $$p | grep ^Fuzz); do \
			echo "== $$p $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$p || exit 1; \
		done; done

bench: build ## print speed figures as ratios against baselines measured in the same run
	$(GO) run ./bench -loopvisor $(BIN)

clean: ## remove build output
	rm -rf bin
