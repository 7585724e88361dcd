# Image URL to use all building/pushing image targets
IMG ?= ghcr.io/opsnow-token-operator/opsnow-token-operator:latest
# The Helm chart, kept in step with config/ by helm-sync and the render test.
CHART ?= charts/opsnow-token-operator

# The Go toolchain of every target (build, test, demo, bench, image, release,
# vulncheck, ...): go1.27.3, whose standard library has the security fixes that
# go1.26.8 lacks (see 'make vulncheck'). The go command fetches it through the
# module proxy once (about 10 s). go.mod keeps 'go 1.26.0', so plain go commands
# outside make still work with Go 1.26. Set with '=', not '?=', so that a
# GOTOOLCHAIN in the environment (CI setups often set 'local') cannot ship an
# older standard library; to override, say it on the command line:
# make GOTOOLCHAIN=local build.
export GOTOOLCHAIN = go1.27.3

# Get the currently used golang install path (in GOPATH/bin, unless GOBIN is set)
ifeq (,$(shell go env GOBIN))
GOBIN=$(shell go env GOPATH)/bin
else
GOBIN=$(shell go env GOBIN)
endif

# CONTAINER_TOOL defines the container tool to be used for building images.
CONTAINER_TOOL ?= docker

# Setting SHELL to bash allows bash commands to be executed by recipes.
# Options are set to exit when a recipe line exits non-zero or a piped command fails.
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate ClusterRole and CustomResourceDefinition objects.
	"$(CONTROLLER_GEN)" rbac:roleName=manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: controller-gen ## Generate code containing DeepCopy, DeepCopyInto, and DeepCopyObject method implementations.
	"$(CONTROLLER_GEN)" object:headerFile="hack/boilerplate.go.txt" paths="./..."

.PHONY: fmt
fmt: ## Run go fmt against code.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet against code.
	go vet ./...

.PHONY: envtest-assets
envtest-assets: setup-envtest ## Provide kube-apiserver and etcd for envtest (cached; built from source when no download works).
	@SETUP_ENVTEST="$(ENVTEST)" ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) hack/envtest-assets.sh >/dev/null

.PHONY: test
test: manifests generate fmt vet envtest-assets kustomize helm ## Run all tests against a local control plane (envtest).
	KUBEBUILDER_ASSETS="$$(SETUP_ENVTEST="$(ENVTEST)" ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) hack/envtest-assets.sh)" \
		KUSTOMIZE="$(KUSTOMIZE)" HELM="$(HELM)" go test ./... -coverprofile cover.out -timeout 20m
	@# The fuzz targets' seeds ran above; a short run of each looks a little further.
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME)

# TEST_FUZZTIME is how long 'make test' runs each fuzz target.
TEST_FUZZTIME ?= 3s

# FUZZTIME is how long each fuzz target runs under 'make fuzz'.
FUZZTIME ?= 30s
# FUZZ_PACKAGES are the packages whose fuzz targets 'make fuzz' runs.
FUZZ_PACKAGES ?= ./internal/opsnow/ ./internal/endpoint/

.PHONY: fuzz
fuzz: ## Run every fuzz target of FUZZ_PACKAGES for FUZZTIME (default 30s), one after another.
	@for pkg in $(FUZZ_PACKAGES); do \
		for target in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$pkg*_test.go | cut -c6-); do \
			echo "go test -run '^\$$' -fuzz '^$$target\$$' -fuzztime $(FUZZTIME) $$pkg"; \
			go test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

.PHONY: verify
verify: manifests generate ## Regenerate CRDs, RBAC and deepcopy code and fail if the tree changed.
	@if [ -n "$$(git status --porcelain -- api config internal)" ]; then \
		echo "Generated files are stale; run 'make manifests generate' and commit:"; \
		git status --porcelain -- api config internal; git --no-pager diff --stat -- api config internal; \
		exit 1; \
	fi

.PHONY: helm-sync
helm-sync: manifests ## Copy the CRD and the manager's RBAC rules from config/ into the Helm chart.
	rm -f $(CHART)/crds/*.yaml
	cp config/crd/bases/*.yaml $(CHART)/crds/
	cp config/rbac/role.yaml $(CHART)/files/manager-role.yaml
	cp config/rbac/leader_election_role.yaml $(CHART)/files/leader-election-role.yaml

.PHONY: helm-lint
helm-lint: helm ## Lint the Helm chart.
	"$(HELM)" lint --strict $(CHART)

# The vulnerability database that 'make vulncheck' reads: built from the module
# golang.org/x/vulndb@$(VULNDB_VERSION) once, outside the checkout, so that
# fresh clones reuse it and later runs need no network.
VULNDB_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/opsnow-token-operator/vulndb/$(VULNDB_VERSION)

.PHONY: vulncheck
vulncheck: vulndb govulncheck ## Fail if the code reaches a known vulnerability (govulncheck, offline, database VULNDB_VERSION).
	@echo "govulncheck $(GOVULNCHECK_VERSION) with $$(go env GOVERSION); database golang.org/x/vulndb@$(VULNDB_VERSION) in $(VULNDB_DIR)"
	"$(GOVULNCHECK)" -db "file://$(VULNDB_DIR)" -show version ./...

# The module has data/osv but no git history, so indexdb, not gendb (which reads
# the dates from git), builds the database; every entry's "modified" is then
# zero, and index/db.json gets the date of VULNDB_VERSION instead, which is what
# govulncheck shows as "DB updated". Built in a .partial folder and moved into
# place, so an interrupted build is never taken for a database.
.PHONY: vulndb
vulndb: ## Build the Go vulnerability database of VULNDB_VERSION into VULNDB_DIR if not there yet.
	@if [ ! -f "$(VULNDB_DIR)/index/db.json" ]; then \
		$(MAKE) --no-print-directory vulndb-indexdb; \
		echo "Building the vulnerability database golang.org/x/vulndb@$(VULNDB_VERSION) into $(VULNDB_DIR)"; \
		src="$$(cd / && go mod download -json golang.org/x/vulndb@$(VULNDB_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p')"; \
		[ -d "$$src/data/osv" ] || { echo "vulndb: no data/osv in golang.org/x/vulndb@$(VULNDB_VERSION) ('$$src')" >&2; exit 1; }; \
		tmp="$(VULNDB_DIR).partial"; rm -rf "$$tmp"; \
		"$(VULNDB_INDEXDB)" -vulns "$$src/data/osv" -out "$$tmp"; \
		stamp="$$(echo "$(VULNDB_VERSION)" | sed -n 's/^v0\.0\.0-\([0-9]\{4\}\)\([0-9]\{2\}\)\([0-9]\{2\}\)\([0-9]\{2\}\)\([0-9]\{2\}\)\([0-9]\{2\}\)-.*/\1-\2-\3T\4:\5:\6Z/p')"; \
		if [ -n "$$stamp" ]; then \
			printf '{"modified":"%s"}' "$$stamp" > "$$tmp/index/db.json"; \
			gzip -n -c "$$tmp/index/db.json" > "$$tmp/index/db.json.gz"; \
		fi; \
		rm -rf "$(VULNDB_DIR)"; mv "$$tmp" "$(VULNDB_DIR)"; \
	fi

.PHONY: lint
lint: golangci-lint actionlint ## Run golangci-lint (.golangci.yml), then actionlint on the GitHub workflows if there are any.
	@# golangci-lint type-checks with the go/types it was built with: one built by a Go older than
	@# the one that builds the code (GOTOOLCHAIN) fails on the newer standard library. Rebuild it then.
	@built="$$(go version "$(GOLANGCI_LINT)" 2>/dev/null | awk '{print $$NF}')"; want="$$(go env GOVERSION)"; \
	if [ "$$(printf '%s\n' "$$built" "$$want" | sort -V | head -n1)" != "$$want" ]; then \
		echo "$(GOLANGCI_LINT) was built with $${built:-an unknown Go}, older than $$want: rebuilding it"; \
		rm -f "$(GOLANGCI_LINT)-$(GOLANGCI_LINT_VERSION)"; $(MAKE) --no-print-directory golangci-lint; \
	fi
	"$(GOLANGCI_LINT)" run
	@workflows="$$(find .github/workflows -maxdepth 1 -name '*.y*ml' 2>/dev/null | sort)"; \
	if [ -n "$$workflows" ]; then \
		echo "\"$(ACTIONLINT)\"" $$workflows; "$(ACTIONLINT)" $$workflows; \
	else \
		echo "actionlint: no .github/workflows/*.y*ml to check"; \
	fi

##@ Build

.PHONY: build
build: manifests generate fmt vet ## Build manager binary.
	go build -o bin/manager .

.PHONY: run
run: manifests generate fmt vet ## Run a controller from your host against the cluster in KUBECONFIG.
	go run . $(ARGS)

.PHONY: demo
demo: envtest-assets ## Run the operator end to end locally: control plane, token server, manager, a sample token (DEMO_DURATION=90s to stop by itself).
	@# Built and run rather than `go run`, which exits 1 after a Ctrl-C even when the demo stopped cleanly.
	go build -o "$(LOCALBIN)/demo" ./hack/demo
	KUBEBUILDER_ASSETS="$$(SETUP_ENVTEST="$(ENVTEST)" ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) hack/envtest-assets.sh)" \
		KUBECTL="$(KUBECTL)" "$(LOCALBIN)/demo"

.PHONY: bench
bench: envtest-assets ## Measure the operator at scale on a local control plane; results in bin/bench.json (BENCH_ARGS="-n 10000 -scenarios burst").
	KUBEBUILDER_ASSETS="$$(SETUP_ENVTEST="$(ENVTEST)" ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) hack/envtest-assets.sh)" \
		go run ./hack/bench $(BENCH_ARGS)

.PHONY: soak
soak: envtest-assets ## Run two replicas for a while under injected faults and check that no token lapses; report in bin/soak.json (SOAK_ARGS="-duration 30m -n 200").
	KUBEBUILDER_ASSETS="$$(SETUP_ENVTEST="$(ENVTEST)" ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) hack/envtest-assets.sh)" \
		go run ./hack/soak $(SOAK_ARGS)

.PHONY: docker-build
docker-build: ## Build docker image with the manager.
	$(CONTAINER_TOOL) build --build-arg GOTOOLCHAIN=$(GOTOOLCHAIN) -t ${IMG} .

.PHONY: docker-push
docker-push: ## Push docker image with the manager.
	$(CONTAINER_TOOL) push ${IMG}

# 'make image' labels the image with VERSION and REVISION and dates every
# timestamp in it SOURCE_DATE_EPOCH, the commit time, so that two builds of
# one commit give the same digest.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# IMAGE_DIR is where 'make image' writes the OCI layout and the tar files.
IMAGE_DIR ?= bin/image

.PHONY: image
image: ## Build the manager image for linux/amd64 and linux/arm64 without Docker into IMAGE_DIR (IMG, VERSION); prints the index digest.
	go run ./hack/image -img "$(IMG)" -version "$(VERSION)" -revision "$(REVISION)" \
		-source-date-epoch "$(SOURCE_DATE_EPOCH)" -out "$(IMAGE_DIR)"

.PHONY: build-installer
build-installer: manifests generate kustomize ## Generate a consolidated YAML with CRDs and deployment.
	mkdir -p dist
	cd config/manager && "$(KUSTOMIZE)" edit set image controller=${IMG}
	"$(KUSTOMIZE)" build config/default > dist/install.yaml

# The SBOM of the manager, for the build constraints of the image (static, linux).
SBOM ?= $(LOCALBIN)/sbom/opsnow-token-operator.cdx.json

.PHONY: sbom
sbom: cyclonedx-gomod ## Write a CycloneDX SBOM of the manager, with the Go standard library and licenses, to SBOM.
	mkdir -p "$$(dirname "$(SBOM)")"
	CGO_ENABLED=0 GOOS=linux "$(CYCLONEDX_GOMOD)" app -main . -json -licenses -std -output "$(SBOM)"
	@echo "SBOM: $(SBOM)"

# The image repository of 'make release': IMG without its tag or digest.
RELEASE_REPO = $(shell echo '$(IMG)' | sed -E 's/@.*//; s/:[^:/]*$$//')

.PHONY: release
release: kustomize helm ## Fill dist/ for release VERSION=x.y.z: install.yaml pinned by digest, chart, image tarballs, SBOM, SHA256SUMS.
	@[[ "$(origin VERSION)" != file && "$(VERSION)" =~ ^[0-9]+\.[0-9]+\.[0-9]+$$ ]] || { \
		echo "make release: give VERSION=x.y.z, e.g. make release VERSION=0.1.0$(if $(filter file,$(origin VERSION)),, (not '$(VERSION)'))" >&2; exit 1; }
	$(MAKE) --no-print-directory image sbom VERSION=$(VERSION) IMG=$(RELEASE_REPO):$(VERSION)
	VERSION=$(VERSION) IMG_REPO=$(RELEASE_REPO) IMAGE_DIR="$(IMAGE_DIR)" SBOM="$(SBOM)" CHART="$(CHART)" \
		KUSTOMIZE="$(KUSTOMIZE)" HELM="$(HELM)" hack/release.sh

##@ Deployment

ifndef ignore-not-found
  ignore-not-found = false
endif

.PHONY: install
install: manifests kustomize ## Install CRDs into the K8s cluster specified in ~/.kube/config.
	"$(KUSTOMIZE)" build config/crd | "$(KUBECTL)" apply -f -

.PHONY: uninstall
uninstall: manifests kustomize ## Uninstall CRDs from the K8s cluster specified in ~/.kube/config. Call with ignore-not-found=true to ignore resource not found errors during deletion.
	"$(KUSTOMIZE)" build config/crd | "$(KUBECTL)" delete --ignore-not-found=$(ignore-not-found) -f -

.PHONY: deploy
deploy: manifests kustomize ## Deploy controller to the K8s cluster specified in ~/.kube/config.
	cd config/manager && "$(KUSTOMIZE)" edit set image controller=${IMG}
	"$(KUSTOMIZE)" build config/default | "$(KUBECTL)" apply -f -

.PHONY: undeploy
undeploy: kustomize ## Undeploy controller from the K8s cluster specified in ~/.kube/config. Call with ignore-not-found=true to ignore resource not found errors during deletion.
	"$(KUSTOMIZE)" build config/default | "$(KUBECTL)" delete --ignore-not-found=$(ignore-not-found) -f -

##@ Dependencies

## Location to install dependencies to
LOCALBIN ?= $(shell pwd)/bin
$(LOCALBIN):
	mkdir -p "$(LOCALBIN)"

## Tool Binaries
KUBECTL ?= kubectl
KUSTOMIZE ?= $(LOCALBIN)/kustomize
HELM ?= $(LOCALBIN)/helm
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
ENVTEST ?= $(LOCALBIN)/setup-envtest
GOLANGCI_LINT = $(LOCALBIN)/golangci-lint
ACTIONLINT ?= $(LOCALBIN)/actionlint
CYCLONEDX_GOMOD ?= $(LOCALBIN)/cyclonedx-gomod
GOVULNCHECK ?= $(LOCALBIN)/govulncheck
# indexdb turns the OSV files of golang.org/x/vulndb into a database for govulncheck.
VULNDB_INDEXDB ?= $(LOCALBIN)/indexdb

## Tool Versions
KUSTOMIZE_VERSION ?= v5.7.1
HELM_VERSION ?= v3.22.0
CONTROLLER_TOOLS_VERSION ?= v0.23.0
# A version tag: the module proxy refuses the release-0.25 branch.
ENVTEST_VERSION ?= v0.25.1
# Kubernetes version of the envtest control plane (kube-apiserver and etcd).
ENVTEST_K8S_VERSION ?= 1.37.2
GOLANGCI_LINT_VERSION ?= v2.15.0
ACTIONLINT_VERSION ?= v1.7.12
CYCLONEDX_GOMOD_VERSION ?= v1.10.0
GOVULNCHECK_VERSION ?= v1.9.0
# The Go vulnerability database that 'make vulncheck' reads, as a version of the
# module golang.org/x/vulndb (its data/osv folder); its date is the data's date.
VULNDB_VERSION ?= v0.0.0-20261105234957-e22db6528018

.PHONY: kustomize
kustomize: $(KUSTOMIZE) ## Download kustomize locally if necessary.
$(KUSTOMIZE): $(LOCALBIN)
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))

.PHONY: helm
helm: $(HELM) ## Download helm locally if necessary.
$(HELM): $(LOCALBIN)
	$(call go-install-tool,$(HELM),helm.sh/helm/v3/cmd/helm,$(HELM_VERSION))

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Download controller-gen locally if necessary.
$(CONTROLLER_GEN): $(LOCALBIN)
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

.PHONY: setup-envtest
setup-envtest: $(ENVTEST) ## Download setup-envtest locally if necessary.
$(ENVTEST): $(LOCALBIN)
	$(call go-install-tool,$(ENVTEST),sigs.k8s.io/controller-runtime/tools/setup-envtest,$(ENVTEST_VERSION))

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT) ## Download golangci-lint locally if necessary.
$(GOLANGCI_LINT): $(LOCALBIN)
	$(call go-install-tool,$(GOLANGCI_LINT),github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

.PHONY: actionlint
actionlint: $(ACTIONLINT) ## Download actionlint locally if necessary.
$(ACTIONLINT): $(LOCALBIN)
	$(call go-install-tool,$(ACTIONLINT),github.com/rhysd/actionlint/cmd/actionlint,$(ACTIONLINT_VERSION))

.PHONY: cyclonedx-gomod
cyclonedx-gomod: $(CYCLONEDX_GOMOD) ## Download cyclonedx-gomod locally if necessary.
$(CYCLONEDX_GOMOD): $(LOCALBIN)
	$(call go-install-tool,$(CYCLONEDX_GOMOD),github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod,$(CYCLONEDX_GOMOD_VERSION))

.PHONY: govulncheck
govulncheck: $(GOVULNCHECK) ## Download govulncheck locally if necessary.
$(GOVULNCHECK): $(LOCALBIN)
	$(call go-install-tool,$(GOVULNCHECK),golang.org/x/vuln/cmd/govulncheck,$(GOVULNCHECK_VERSION))

.PHONY: vulndb-indexdb
vulndb-indexdb: $(VULNDB_INDEXDB) ## Download the vulnerability database's indexdb locally if necessary.
$(VULNDB_INDEXDB): $(LOCALBIN)
	$(call go-install-tool,$(VULNDB_INDEXDB),golang.org/x/vulndb/cmd/indexdb,$(VULNDB_VERSION))

# go-install-tool will 'go install' any package with custom target and name of binary, if it doesn't exist
# $1 - target path with name of binary
# $2 - package url which can be installed
# $3 - specific version of package
define go-install-tool
@[ -f "$(1)-$(3)" ] && [ "$$(readlink -- "$(1)" 2>/dev/null)" = "$(1)-$(3)" ] || { \
set -e; \
package=$(2)@$(3) ;\
echo "Downloading $${package}" ;\
rm -f "$(1)" ;\
GOBIN="$(LOCALBIN)" go install $${package} ;\
mv "$(LOCALBIN)/$$(basename "$(1)")" "$(1)-$(3)" ;\
} ;\
ln -sf "$$(realpath "$(1)-$(3)")" "$(1)"
endef
