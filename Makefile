# medmesh: `make demo` runs the demo, `make test` runs every test.
GO            ?= go
CONSUL_VERSION := 1.20.1
BIN           := $(CURDIR)/bin
K8S_VERSION    := 1.34.2
JAEGER_VERSION := 1.76.0
export CONSUL_BIN ?= $(BIN)/consul
# envtest (controller-runtime) runs the kube-apiserver and etcd found here.
export KUBEBUILDER_ASSETS ?= $(BIN)/k8s

.PHONY: all build test tools tools-consul tools-k8s tools-jaeger tools-chromium tools-node demo bench bench-scale bench-scale lint clean crds

all: build

build:
	$(GO) build -ldflags "-X main.version=$$(git describe --always --dirty 2>/dev/null || echo dev)" -o $(BIN)/medmesh ./cmd/medmesh

tools: tools-consul tools-k8s tools-jaeger tools-chromium tools-node

# Consul is built from its Go module in a separate small module
# (tools/consul) so the main go.mod stays lean. Reused when present.
tools-consul:
	@if [ -x $(BIN)/consul ] && $(BIN)/consul version | grep -q "v$(CONSUL_VERSION)"; then \
		echo "bin/consul v$(CONSUL_VERSION) present"; \
	else \
		echo "building Consul v$(CONSUL_VERSION) from its Go module (about 10 minutes the first time)"; \
		cd tools/consul && $(GO) build -o $(BIN)/consul github.com/hashicorp/consul; \
	fi

# Jaeger (the v2 all-in-one: OTLP in, in-memory storage, query API) for
# the tracing tests and the demo, built from its module (tools/jaeger;
# about 6 minutes on 2 cores the first time). Its UI assets are not part
# of the Go module, so its web page is a placeholder; the query API works.
tools-jaeger:
	@if [ -x $(BIN)/jaeger ] && $(GO) version -m $(BIN)/jaeger | grep -Eq "^\s+mod\s+github.com/jaegertracing/jaeger\s+v$(JAEGER_VERSION)\s"; then \
		echo "bin/jaeger v$(JAEGER_VERSION) present"; \
	else \
		echo "building Jaeger v$(JAEGER_VERSION) from its Go module (about 6 minutes the first time)"; \
		cd tools/jaeger && $(GO) build -o $(BIN)/jaeger github.com/jaegertracing/jaeger/cmd/jaeger; \
	fi

# A real kube-apiserver and etcd for envtest, built from their modules
# (tools/k8s; about 7 minutes on 2 cores the first time).
tools-k8s:
	@if [ -x $(BIN)/k8s/kube-apiserver ] && $(BIN)/k8s/kube-apiserver --version | grep -q "v$(K8S_VERSION)" && [ -x $(BIN)/k8s/etcd ]; then \
		echo "bin/k8s kube-apiserver v$(K8S_VERSION) and etcd present"; \
	else \
		echo "building kube-apiserver v$(K8S_VERSION) and etcd from their Go modules (about 7 minutes the first time)"; \
		cd tools/k8s && $(GO) build -o $(BIN)/k8s/etcd ./etcd && \
		$(GO) build -ldflags "-X k8s.io/component-base/version.gitVersion=v$(K8S_VERSION)" -o $(BIN)/k8s/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver; \
	fi

# Debian's Chromium for the telehealth browser test (headless, fake
# camera; integration/telehealth_browser_test.go). Installed with apt only
# when missing; sudo only when not root.
CHROMIUM := /usr/bin/chromium
tools-chromium:
	@if [ -x $(CHROMIUM) ]; then \
		echo "chromium present"; \
	else \
		echo "installing chromium with apt (a few minutes the first time)"; \
		SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		log=$$(mktemp); \
		if $$SUDO apt-get update -qq >$$log 2>&1 && \
			$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >>$$log 2>&1; then \
			rm -f $$log; $(CHROMIUM) --version; \
		else \
			tail -20 $$log; rm -f $$log; echo "apt-get install chromium failed"; exit 1; \
		fi; \
	fi

# Node's @grpc/grpc-js and @grpc/grpc-js-xds for the interop tests
# (integration/interop_test.go drives interop/node/*.js), pinned by
# interop/node/package-lock.json and installed with `npm ci` into
# .cache/npm, outside the Go module's packages (git ignores it). Reused
# while the installed lockfile equals the committed one. node and npm come
# with the machine; without them this fails, naming them.
NODE_CACHE := $(CURDIR)/.cache/npm
tools-node:
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
		echo "node and npm are needed for the grpc-js interop tests: install Node.js 20 and npm (e.g. apt-get install nodejs npm)"; exit 1; }
	@if [ -f $(NODE_CACHE)/node_modules/@grpc/grpc-js-xds/package.json ] && \
		cmp -s interop/node/package-lock.json $(NODE_CACHE)/package-lock.json; then \
		echo "grpc-js and grpc-js-xds present (.cache/npm)"; \
	else \
		echo "installing grpc-js and grpc-js-xds from interop/node/package-lock.json into .cache/npm"; \
		rm -rf $(NODE_CACHE) && mkdir -p $(NODE_CACHE) && \
		cp interop/node/package.json interop/node/package-lock.json $(NODE_CACHE)/ && \
		log=$$(mktemp); \
		if npm ci --prefix $(NODE_CACHE) --ignore-scripts --no-audit --no-fund --loglevel=error >$$log 2>&1; then \
			rm -f $$log; \
		else \
			tail -20 $$log; rm -f $$log $(NODE_CACHE)/package-lock.json; echo "npm ci in .cache/npm failed"; exit 1; \
		fi; \
	fi

# CRD manifests (deploy/crds) and deepcopy code from api/v1alpha1, with
# controller-gen built from its pinned module (tools/controller-gen).
# api/v1alpha1's test fails when the committed output is stale.
crds:
	cd tools/controller-gen && $(GO) build -o $(BIN)/controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen
	$(BIN)/controller-gen object paths=./api/... crd:crdVersions=v1 output:crd:artifacts:config=deploy/crds

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

test: tools lint
	$(GO) test -race -count=1 -timeout 20m ./...

# The demo: three sites (Consul datacenters peered on loopback, a control
# plane each, proxyless example services). Stops on Ctrl-C, after
# DEMO_ROUNDS rounds of its story or DEMO_SECONDS seconds if set;
# examples/README.md.
demo: tools-consul tools-jaeger build
	$(GO) build -o $(BIN)/clinical-service ./examples/service
	$(GO) build -o $(BIN)/vitals ./examples/vitals/cmd/vitals
	$(GO) build -o $(BIN)/ ./examples/telehealth/cmd/telehealth-signal ./examples/telehealth/cmd/telehealth-turn ./examples/telehealth/cmd/telehealth-peer
	$(GO) build -o $(BIN)/medmesh-demo ./examples/demo
	$(BIN)/medmesh-demo --medmesh $(BIN)/medmesh --service-bin $(BIN)/clinical-service

# The xDS benchmark runs at edge scale (bench-scale: 1,000 services x 10
# instances with a call graph in intentions, configuration scoped by
# authorization for fleets of 1,000, 2,000 and 5,000 proxies, the largest
# ending with a control-plane restart every proxy reconnects to
# (xds_restart_*), then the full-mesh row of 1,000 proxies with the
# figures `make bench` always printed; under 10 minutes on 2 cores); e.g.
# BENCH_XDS_FLAGS="-services 100 -steps 100,300 -fullmesh-proxies 100" for
# a quick run. `go run ./bench/xds -h` lists the flags; without -scale it
# runs the full mesh alone. The small scenario (100 services x 10
# instances, 200 proxies on an idle Consul) measures the latency floor:
# xds_convergence_small_p50_ms / _p99_ms and the per-stage breakdown
# (xds_stage_*, docs/architecture.md).
BENCH_XDS_FLAGS ?=
BENCH_XDS_SMALL_FLAGS ?= -services 100 -instances 10 -proxies 200 -changes 40 -stages -restart=false -label small
bench-scale: tools-consul build
	$(GO) run ./bench/xds -scale $(BENCH_XDS_FLAGS)

bench: tools build bench-scale
	$(GO) run ./bench/xds $(BENCH_XDS_SMALL_FLAGS)
	$(GO) run ./bench/svid
	$(GO) run ./bench/policy
	$(GO) run ./bench/extproc
	$(GO) run ./bench/residency
	$(GO) run ./bench/sites
	$(GO) run ./bench/realtime
	$(GO) run ./bench/tracing

clean:
	rm -f $(BIN)/medmesh $(BIN)/clinical-service $(BIN)/vitals $(BIN)/telehealth-signal $(BIN)/telehealth-turn $(BIN)/telehealth-peer $(BIN)/medmesh-demo
