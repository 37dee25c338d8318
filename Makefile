# Palisade build entry points. `make test` and `make demo` work on a fresh Debian machine as root:
# they install what they need first.

GO       ?= go
BIN      := bin/palisade
TOOLS    := $(CURDIR)/.tools/bin
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
# The suite has privileged tests (netns, eBPF); they run when make runs as root.
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: all build test deps generate check-generate lint bench demo clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/palisade

deps:
	@./deploy/local/install-deps.sh

test: deps
	$(GO) test $(TESTFLAGS) ./...

STATICCHECK_VERSION        := v0.8.2
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

# Regenerates the eBPF objects (clang) and the gRPC code (protoc); the results are committed.
generate: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	@PALISADE_NEED_GENERATORS=1 ./deploy/local/install-deps.sh
	$(GO) generate ./...

# Fails when the committed generated code differs from what `make generate` produces.
check-generate: generate
	@git diff --exit-code -- '*.go' '*.o' || { echo "generated files are stale: run 'make generate' and commit" >&2; exit 1; }

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(TOOLS)/staticcheck
	$(GO) vet ./...
	$(TOOLS)/staticcheck ./...

# Baselines the benchmarks compare against: HAProxy (L7 proxy) and iptables (datapath).
bench: deps
	@PALISADE_EXTRA_PACKAGES="haproxy iptables" ./deploy/local/install-deps.sh
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 30m ./...

# The Star Wars scenario on a two-node playground cluster in network namespaces, then across
# three clusters connected in a cluster mesh (root).
demo: deps build
	PALISADE=$(BIN) ./deploy/local/demo.sh
	PALISADE=$(BIN) ./deploy/local/demo-mesh.sh

clean:
	rm -rf bin .tools
