# Cortex front door: make run | make test | make bench.
# Each target installs what is missing (Debian packages, the pinned Claude Code
# CLI and test-only npm packages under .deps/), then builds with CMake.
SHELL := /bin/bash
JOBS ?= $(shell nproc)
CLAUDE_CODE_VERSION := 2.1.330
WS_VERSION := 8.18.0
# e2e.openapi validates real responses against docs/openapi.json (JSON Schema 2020-12).
AJV_VERSION := 8.20.0
AJV_FORMATS_VERSION := 3.0.1
APT_PKGS := build-essential cmake pkg-config libwebsockets-dev libjansson-dev libgit2-dev \
	libwebsockets-evlib-ev libwebsockets-evlib-uv libev-dev libuv1-dev \
	libcap-dev libseccomp-dev libsqlite3-dev libsodium-dev libcurl4-openssl-dev libcmocka-dev libarchive-dev \
	util-linux procps git e2fsprogs buildah mmdebstrap nginx-light tmux chromium iproute2 etcd-server etcd-client systemd
# The machine's image store: `make image` unpacks the default image there once;
# `make run`, the tests and the benches share it.
IMAGE_STORE ?= /var/cache/cortex/store
NPM_STAMP := .deps/.npm-$(CLAUDE_CODE_VERSION)-$(WS_VERSION)-$(AJV_VERSION)-$(AJV_FORMATS_VERSION)
# The apt stamp names the package list: adding a package checks again.
APT_STAMP := .deps/.apt-$(shell echo $(APT_PKGS) | md5sum | cut -c1-8)

# libwebsockets: Debian's 4.1.6-3 built from its source package with our
# patch (third_party/lws/: close on an unmasked client frame, RFC 6455 5.1),
# once per patch set, into LWS_PREFIX; CMake links it with an rpath
# (CORTEX_LWS_DIR).  docs/hacking.md "The patched libwebsockets".
LWS_DEB_VERSION := 4.1.6-3
LWS_PREFIX ?= $(CURDIR)/.deps/lws
LWS_STAMP := $(LWS_PREFIX)/.stamp-$(LWS_DEB_VERSION)-$(shell cat third_party/lws/build.sh third_party/lws/*.patch | md5sum | cut -c1-8)
# The same source and patches as a static library without TLS for ws-agent
# alone (a static binary: no dynamic loading in every sandbox's start).
LWS_STATIC_PREFIX := $(CURDIR)/.deps/lws-static
LWS_STATIC_STAMP := $(LWS_STATIC_PREFIX)/.stamp-$(LWS_DEB_VERSION)-$(shell cat third_party/lws/build.sh third_party/lws/*.patch | md5sum | cut -c1-8)
CMAKE_LWS := -DCORTEX_LWS_DIR=$(LWS_PREFIX) -DCORTEX_LWS_STATIC_DIR=$(LWS_STATIC_PREFIX)

# `make fuzz` only: clang with libFuzzer (not needed by make test).
FUZZ_APT_PKGS := clang libclang-rt-dev dpkg-dev
FUZZ_APT_STAMP := .deps/.apt-fuzz-$(shell echo $(FUZZ_APT_PKGS) | md5sum | cut -c1-8)
FUZZ_SECONDS ?= 60

.PHONY: all deps build build-asan build-tsan run test bench soak clean format image install fuzz

# FHS install (docs/operations.md "Install"): programs in $(PREFIX)/lib/cortex
# (cortexd finds ws-agent and its bundle next to itself), cortexd and
# cortexctl on PATH, the systemd unit, config in /etc/cortex (never
# overwritten), state in /var/lib/cortex.  Its own build dir, configured
# with the install paths compiled in.
PREFIX ?= /usr/local
LIBDIR := $(PREFIX)/lib/cortex
install: deps
	cmake -S . -B build-install -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCORTEX_INSTALL_LIBDIR=$(LIBDIR) $(CMAKE_LWS) \
		-DCORTEX_CLAUDE_DIR=$(LIBDIR)/claude-code >/dev/null
	cmake --build build-install -j$(JOBS) --target cortexd cortexctl ws-agent cortex-clone cortex-sbxfork
	install -d -m 0755 $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/lib/systemd/system \
		$(DESTDIR)$(PREFIX)/share/doc/cortex
	install -d -m 0700 $(DESTDIR)/etc/cortex $(DESTDIR)/var/lib/cortex
	install -m 0755 build-install/cortexd build-install/ws-agent build-install/cortex-clone $(DESTDIR)$(LIBDIR)/
	install -m 0755 build-install/cortex-sbxfork $(DESTDIR)$(LIBDIR)/
	rm -rf $(DESTDIR)$(LIBDIR)/ws-agent-rt $(DESTDIR)$(LIBDIR)/claude-code $(DESTDIR)$(LIBDIR)/lws
	install -d -m 0755 $(DESTDIR)$(LIBDIR)/lws
	cp -a $(LWS_PREFIX)/lib/libwebsockets.so* $(LWS_PREFIX)/lib/libwebsockets-evlib_*.so $(DESTDIR)$(LIBDIR)/lws/
	cp -a build-install/ws-agent-rt $(DESTDIR)$(LIBDIR)/ws-agent-rt
	cp -a .deps/node_modules/@anthropic-ai/claude-code $(DESTDIR)$(LIBDIR)/claude-code
	ln -sfn ../lib/cortex/cortexd $(DESTDIR)$(PREFIX)/bin/cortexd
	install -m 0755 build-install/cortexctl $(DESTDIR)$(PREFIX)/bin/cortexctl
	install -d -m 0755 $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	install -m 0644 docs/cortexctl.1 $(DESTDIR)$(PREFIX)/share/man/man1/cortexctl.1
	install -m 0644 contrib/cortexctl.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/cortexctl
	sed 's|/usr/local|$(PREFIX)|g' contrib/cortexd.service > $(DESTDIR)/lib/systemd/system/cortexd.service
	install -m 0644 README.md docs/*.md contrib/cortexd-keep-on-crash.conf $(DESTDIR)$(PREFIX)/share/doc/cortex/
	@[ -f $(DESTDIR)/etc/cortex/cortexd.json ] || \
		(umask 077; echo '{"images":{"dir":"/var/lib/cortex/images"}}' > $(DESTDIR)/etc/cortex/cortexd.json)
	@echo "installed under $(DESTDIR)$(PREFIX); then: systemctl daemon-reload && systemctl enable --now cortexd"

all: build

deps: $(APT_STAMP) $(NPM_STAMP) $(LWS_STAMP) $(LWS_STATIC_STAMP)

$(APT_STAMP):
	@mkdir -p .deps
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then missing="$$missing nodejs npm"; fi; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq $$missing; \
	fi
	@touch $@

$(LWS_STAMP): | $(APT_STAMP)
	JOBS=$(JOBS) bash third_party/lws/build.sh $(LWS_PREFIX) $(LWS_DEB_VERSION)

$(LWS_STATIC_STAMP): | $(APT_STAMP)
	JOBS=$(JOBS) bash third_party/lws/build.sh $(LWS_STATIC_PREFIX) $(LWS_DEB_VERSION) static

$(FUZZ_APT_STAMP): | $(APT_STAMP)
	@missing=$$(for p in $(FUZZ_APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq $$missing; \
	fi
	@touch $@

$(NPM_STAMP): | $(APT_STAMP)
	@mkdir -p .deps
	@[ -f .deps/package.json ] || echo '{"name":"cortex-deps","private":true}' > .deps/package.json
	cd .deps && npm install --no-audit --no-fund --loglevel=error \
		@anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION) ws@$(WS_VERSION) \
		ajv@$(AJV_VERSION) ajv-formats@$(AJV_FORMATS_VERSION)
	@.deps/node_modules/.bin/claude --version
	@touch $@

build: deps
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_LWS) >/dev/null
	cmake --build build -j$(JOBS)

build-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCORTEX_SANITIZE=ON $(CMAKE_LWS) >/dev/null
	cmake --build build-asan -j$(JOBS)

# ThreadSanitizer (exclusive with ASan): -O1, its own build dir.
build-tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DCORTEX_TSAN=ON $(CMAKE_LWS) >/dev/null
	cmake --build build-tsan -j$(JOBS)

# The suite runs against the ASan+UBSan build, then the tests labelled tsan
# (unit, gateway harness, e2e.session, e2e.hot) against the TSan build; both
# run even if the first fails.  build/ is built too so the binaries named in
# the contract exist.
test: build build-asan build-tsan image
	rc=0; \
	(cd build-asan && ctest --output-on-failure --timeout 600) || rc=1; \
	(cd build-tsan && ctest -L tsan --output-on-failure --timeout 600) || rc=1; \
	exit $$rc

# Fuzz every parser (tests/fuzz/, docs/reliability.md "Fuzzing"): libFuzzer +
# ASan + UBSan against an instrumented jansson built from Debian's source,
# each target for FUZZ_SECONDS; prints execs/s and coverage per target and
# fails on a crash (the reproducer's path is printed).  make test replays the
# committed corpus only (the fuzz.* tests).
fuzz: $(APT_STAMP) $(FUZZ_APT_STAMP) $(LWS_STAMP)
	JOBS=$(JOBS) bash tests/fuzz/jansson.sh build-fuzz/deps/jansson
	PKG_CONFIG_PATH=$(CURDIR)/build-fuzz/deps/jansson/lib/pkgconfig \
		cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DCORTEX_FUZZ=ON $(CMAKE_LWS) >/dev/null
	cmake --build build-fuzz -j$(JOBS) --target fuzz_targets
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh

# cortexd in the foreground on CORTEX_LISTEN with data in CORTEX_DATA_DIR
# (`make run CORTEX_LISTEN=127.0.0.1:9000 CORTEX_DATA_DIR=/tmp/c2` for a
# second one).  contrib/cortex-run.sh makes the admin token and the config
# file, prints a quick start, and, with no model provider configured
# (ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY, "provider" in the config file),
# starts the demo model first and points cortexd at it (README "Quick start").
CORTEX_LISTEN ?= 127.0.0.1:8787
CORTEX_DATA_DIR ?= .cortex
run: build image
	@CORTEXD=build/cortexd CORTEXCTL=build/cortexctl CORTEX_LISTEN=$(CORTEX_LISTEN) \
		CORTEX_DATA_DIR=$(CORTEX_DATA_DIR) IMAGE_STORE=$(IMAGE_STORE) exec bash contrib/cortex-run.sh

# The default sandbox image (root Dockerfile) built with buildah on an
# mmdebstrap bookworm base, exported to /var/cache/cortex/images/default-<hash>/
# (cached per machine: a second run is a no-op).  See docs/images.md.
# Then unpacked once into the machine's image store that `make run`, the
# tests and the benches share (a no-op when it is there).
image: build
	bash container/build-default.sh
	build/cortex-imgstore $(IMAGE_STORE) import default /var/cache/cortex/images/default

bench: build image
	bash bench/run.sh

# Long-running: 50 sessions x 1000 turns with the mini-agent, 20 sessions with
# real Claude Code for 30 minutes; 0 errors, RSS/fd drift < 5%, nothing left
# after delete.  Not part of `make test`.  SOAK_SESSIONS, SOAK_TURNS,
# SOAK_REAL_SESSIONS, SOAK_REAL_MINUTES, SOAK_PARTS=mini,real change the shape
# (docs/reliability.md, "Soak").
soak: build image
	@mkdir -p build/bench-tmp
	NODE_PATH=$(CURDIR)/.deps/node_modules CORTEXD=$${CORTEXD:-$(CURDIR)/build/cortexd} TESTS_DIR=$(CURDIR)/tests \
	MINI_AGENT=$(CURDIR)/build/mini-agent CORTEX_CLAUDE_DIR=$(CURDIR)/.deps/node_modules/@anthropic-ai/claude-code \
	CORTEX_TEST_TMP=$(CURDIR)/build/bench-tmp CORTEX_DEFAULT_IMAGE=/var/cache/cortex/images/default \
	CORTEX_IMAGE_STORE=$(IMAGE_STORE) node bench/soak.js

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-tsan build-fuzz build-install
