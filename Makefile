# plantd — the commands in the README. Every target sets up what it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install deps-system run test test-unit test-integration test-adversarial test-k8s test-e2e lint format bench \
        testenv testenv-up testenv-down testenv-node-up testenv-node-down image image-smoke clean soak protos protos-check

help: ## Show the targets
	@grep -E '^[a-z][a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[1mmake %-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "[make] creating $(VENV) and installing plantd with its dev tools"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --upgrade pip
	@$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP) ## Create .venv and install plantd (editable) with test and lint tools

deps-system: ## Install the Debian packages the tests use (redis-server), if missing
	@hack/install-system-deps.sh

run: install ## Run the secured stack locally (broker, identity, echo, state); the banner says how to log in
	@$(BIN)/plantd up

test: install deps-system testenv ## Run every test tier: unit, integration, adversarial, k8s
	@$(BIN)/pytest $(PYTEST_ARGS)

test-unit: install ## Run the unit tier only (fast, pure logic)
	@$(BIN)/pytest -m unit $(PYTEST_ARGS)

test-integration: install deps-system ## Run the integration tier (real processes, sockets, redis-server)
	@$(BIN)/pytest -m integration $(PYTEST_ARGS)

test-adversarial: install deps-system ## Run the adversarial tier (floods, oversized and malformed input, slow consumers)
	@$(BIN)/pytest -m adversarial $(PYTEST_ARGS)

test-k8s: install testenv ## Run the Kubernetes tier against the local control plane
	@$(BIN)/pytest -m k8s $(PYTEST_ARGS)

test-e2e: install deps-system ## Run the e2e tier: build the image, run every component in it (restricted)
	@$(BIN)/pytest -m e2e $(PYTEST_ARGS)

lint: install ## ruff (lint + format check), mypy --strict, and protos-check
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@hack/protos/protos.sh check

protos: install ## Regenerate the plantd.v1 Python code (services/plantd/v1) from protos/
	@hack/protos/protos.sh gen

protos-check: install ## Generated code up to date, buf lint (STANDARD), buf breaking against main
	@hack/protos/protos.sh check

format: install ## Apply ruff's fixes and formatting
	@$(BIN)/ruff check --fix .
	@$(BIN)/ruff format .

bench: install deps-system ## Run the benchmarks (broker, bus, state, identity, operator, gateway, ha); figures and ratios
	@$(BIN)/python -m bench.broker
	@$(BIN)/python -m bench.bus
	@$(BIN)/python -m bench.state
	@$(BIN)/python -m bench.identity
	@$(BIN)/python -m bench.operator
	@$(BIN)/python -m bench.gateway
	@$(BIN)/python -m bench.ha

soak: install ## Hostile random input against a local stack for SOAK_MINUTES (default 10); 0 writes lost
	@$(BIN)/python -m bench.soak --minutes $(or $(SOAK_MINUTES),10)

testenv: ## Build (or reuse) the Kubernetes test binaries into ~/.cache/plantd-testenv
	@hack/testenv/build.sh >/dev/null

testenv-up: testenv ## Start both test clusters: kwok fake nodes, and (as root) one real node with `make image` imported
	@hack/testenv/up.sh
	@if [ "$$(id -u)" -ne 0 ]; then \
		echo "testenv-up: the real-node cluster needs root: run sudo make testenv-node-up" >&2; \
	else \
		$(MAKE) --no-print-directory deps-system && \
		hack/testenv/node.sh up --image "$$(hack/image/build.sh --archive)"; \
	fi

testenv-down: ## Stop both test clusters
	@if [ "$$(id -u)" -eq 0 ]; then hack/testenv/node.sh down; fi
	@hack/testenv/down.sh

testenv-node-up: deps-system testenv ## Start the real-node cluster (containerd, kubelet, kube-proxy, CoreDNS, local-path); root
	@hack/testenv/node.sh up

testenv-node-down: ## Stop the real-node cluster and remove its state
	@hack/testenv/node.sh down

image: ## Build the container image localhost/plantd:dev (Docker if an engine runs, else buildah + a debootstrap base)
	@hack/image/build.sh >/dev/null

image-smoke: ## Run the built image as a restricted pod would (runc, uid 10001, read-only root) and check every component starts
	@hack/image/smoke.sh

clean: ## Remove the virtualenv and caches (not the testenv binaries)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
