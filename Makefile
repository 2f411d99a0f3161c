# SPDX-License-Identifier: Apache-2.0
# ambit: build, test, lab demo and benchmarks. Out-of-tree in $(BUILD); `V=1` for commands;
# `SAN=address,undefined` for sanitizers (what `make test` uses, in $(BUILD)/san).
.DELETE_ON_ERROR:
.SUFFIXES:
.DEFAULT_GOAL := all

BUILD   ?= build
SAN     ?=
V       ?= 0
CC      ?= gcc
CLANG   ?= clang
BPFTOOL ?= bpftool
VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
GIT_REV := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

ifeq ($(V),1)
Q :=
msg = @true
else
Q := @
msg = @printf '  %-8s %s\n' $(1) $(2)
endif

PKGS := libbpf libnl-3.0 libnl-route-3.0 openssl libnghttp2 libprotobuf-c libcurl jansson yaml-0.1
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -lelf -lz -lpthread

CFLAGS ?= -O2 -g
WARN   := -Wall -Wextra -Wundef -Wstrict-prototypes -Wno-unused-parameter -Werror
ALL_CFLAGS = -std=gnu11 $(CFLAGS) $(WARN) -D_GNU_SOURCE -MMD -MP -I. -I$(BUILD) $(PKG_CFLAGS) \
	-DAMBIT_VERSION='"$(VERSION)"' -DAMBIT_GIT_REV='"$(GIT_REV)"'
ALL_LDFLAGS = $(LDFLAGS)
ifneq ($(SAN),)
ALL_CFLAGS  += -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ALL_LDFLAGS += -fsanitize=$(SAN)
endif

# ---- dependencies: installed once per machine, re-checked when the list changes ----
DEPS_STAMP := $(BUILD)/.deps-ok
$(DEPS_STAMP): mk/deps.sh mk/packages.txt
	$(Q)mkdir -p $(@D)
	$(Q)./mk/deps.sh
	$(Q)touch $@
.PHONY: deps
deps:
	./mk/deps.sh

# ---- sources, one folder per module ----
COMMON_SRC := $(wildcard common/*.c)
TLS_SRC    := $(wildcard tls/*.c)
OTLP_SRC   := $(wildcard otlp/*.c)
ISTIO_SRC  := $(wildcard istio/*.c)
GRPC_SRC   := $(wildcard grpc/*.c)
HTTP_SRC   := $(wildcard http/*.c)
AGENT_SRC  := $(filter-out agent/main.c,$(wildcard agent/*.c))
CTL_SRC    := $(wildcard agent/ctl/*.c)
WP_SRC     := $(wildcard agent/waypoint/*.c)
BPF_SRC    := $(wildcard bpf/*.bpf.c)
# The node agent's side of Istio's certificate API (ca/client.c) and the message code both
# sides share go into libca; the rest of ca/ is the ambit-ca binary.
CA_LIB_SRC := $(wildcard ca/msg.c ca/client.c)
CA_BIN_SRC := $(filter-out $(CA_LIB_SRC),$(wildcard ca/*.c))

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))
BPF_OBJ   := $(patsubst %.bpf.c,$(BUILD)/%.bpf.o,$(BPF_SRC))
BPF_SKEL  := $(patsubst %.bpf.c,$(BUILD)/%.skel.h,$(BPF_SRC))
# protobuf-c: MODULE/proto/*.proto compile to $(BUILD)/MODULE/pb (seen as the generated code
# includes them: -I$(BUILD)/MODULE/pb).
PROTO_MODS := otlp ca
proto_c = $(patsubst $(1)/proto/%.proto,$(BUILD)/$(1)/pb/%.pb-c.c,$(shell find $(1)/proto -name '*.proto' 2>/dev/null))
PROTO_C   := $(foreach m,$(PROTO_MODS),$(call proto_c,$(m)))
PROTO_H   := $(PROTO_C:.c=.h)
GENERATED := $(BPF_SKEL) $(PROTO_H)

LIB_COMMON := $(BUILD)/libcommon.a
LIB_TLS    := $(BUILD)/libtls.a
LIB_OTLP   := $(BUILD)/libotlp.a
LIB_ISTIO  := $(BUILD)/libistio.a
LIB_HTTP   := $(BUILD)/libhttp.a
LIB_GRPC   := $(BUILD)/libgrpc.a
LIB_CA     := $(BUILD)/libca.a
LIB_AGENT  := $(BUILD)/libagent.a
AGENT_LIBS := $(LIB_AGENT) $(LIB_CA) $(LIB_ISTIO) $(LIB_HTTP) $(LIB_OTLP) $(LIB_GRPC) $(LIB_TLS) $(LIB_COMMON)

BINS := $(BUILD)/ambitd $(BUILD)/ambitctl $(BUILD)/ambit-waypoint $(BUILD)/ambit-ca

.PHONY: all
all: $(BINS)

# ---- generated code ----
$(BUILD)/bpf/vmlinux.h: | $(DEPS_STAMP)
	$(call msg,GEN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@

BPF_ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(BUILD)/bpf/vmlinux.h $(wildcard bpf/shared/*.h)
	$(call msg,BPF,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(BPF_ARCH) -Wall -Werror \
		-I$(BUILD)/bpf -I. -c $< -o $@

$(BUILD)/bpf/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(call msg,SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name $(subst -,_,$*)_bpf > $@

define proto_rules
$$(BUILD)/$(1)/pb/%.pb-c.c $$(BUILD)/$(1)/pb/%.pb-c.h: $(1)/proto/%.proto | $$(DEPS_STAMP)
	$$(call msg,PROTOC,$$<)
	$$(Q)mkdir -p $$(BUILD)/$(1)/pb
	$$(Q)protoc-c --proto_path=$(1)/proto --c_out=$$(BUILD)/$(1)/pb $$<

# protobuf-c output is not ours: compile it without -Werror's extra warnings.
$$(BUILD)/$(1)/pb/%.pb-c.o: $$(BUILD)/$(1)/pb/%.pb-c.c | $$(PROTO_H)
	$$(call msg,CC,$$@)
	$$(Q)$$(CC) -std=gnu11 $$(CFLAGS) -I$$(BUILD)/$(1)/pb $$(PKG_CFLAGS) $$(if $$(SAN),-fsanitize=$$(SAN)) -c $$< -o $$@
endef
$(foreach m,$(PROTO_MODS),$(eval $(call proto_rules,$(m))))

# ---- objects ----
$(BUILD)/%.o: %.c | $(DEPS_STAMP) $(GENERATED)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

# Keep generated protobuf-c sources and BPF objects/skeletons (intermediates of the .o files).
.SECONDARY: $(PROTO_C) $(PROTO_H) $(BPF_OBJ) $(BPF_SKEL)

# otlp/ needs only the generated protobuf-c headers (not the BPF skeletons), and sees them
# the way the generated code includes them.
$(call obj,$(OTLP_SRC)): $(BUILD)/otlp/%.o: otlp/%.c | $(DEPS_STAMP) $(PROTO_H)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -I$(BUILD)/otlp/pb -c $< -o $@

# ca/ sees its generated protobuf-c headers the same way.
$(call obj,$(CA_LIB_SRC) $(CA_BIN_SRC)): $(BUILD)/ca/%.o: ca/%.c | $(DEPS_STAMP) $(GENERATED)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -I$(BUILD)/ca/pb -c $< -o $@

$(LIB_COMMON): $(call obj,$(COMMON_SRC))
$(LIB_TLS):    $(call obj,$(TLS_SRC))
$(LIB_OTLP):   $(call obj,$(OTLP_SRC)) $(patsubst %.c,%.o,$(call proto_c,otlp))
$(LIB_GRPC):   $(call obj,$(GRPC_SRC))
$(LIB_CA):     $(call obj,$(CA_LIB_SRC)) $(patsubst %.c,%.o,$(call proto_c,ca))
$(LIB_ISTIO):  $(call obj,$(ISTIO_SRC))
$(LIB_HTTP):   $(call obj,$(HTTP_SRC))
$(LIB_AGENT):  $(call obj,$(AGENT_SRC))
$(BUILD)/%.a:
	$(call msg,AR,$@)
	$(Q)mkdir -p $(@D)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/ambitd: $(BUILD)/agent/main.o $(AGENT_LIBS)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/ambitctl: $(call obj,$(CTL_SRC)) $(LIB_COMMON)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/ambit-waypoint: $(call obj,$(WP_SRC)) $(AGENT_LIBS)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/ambit-ca: $(call obj,$(CA_BIN_SRC)) $(AGENT_LIBS)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

# ---- tests ----
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst %.c,$(BUILD)/%,$(UNIT_SRC))
BPFT_SRC := $(wildcard tests/bpf/test_*.c)
BPFT_BIN := $(patsubst %.c,$(BUILD)/%,$(BPFT_SRC))
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOL_BIN := $(patsubst %.c,$(BUILD)/%,$(TOOL_SRC))

$(BUILD)/tests/%: tests/%.c $(AGENT_LIBS) | $(DEPS_STAMP) $(GENERATED)
	$(call msg,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -Itests -o $@ $< $(AGENT_LIBS) $(PKG_LIBS)

# Traffic tools (tcpkit) are self-contained: libc only, so they build while the libraries do not.
$(TOOL_BIN): $(BUILD)/tests/%: tests/%.c | $(DEPS_STAMP)
	$(call msg,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $<

# tls/ builds and tests standalone: its objects need no generated headers, and its unit
# tests link only libtls and libcommon (static pattern rules win over the generic ones).
$(BUILD)/tls/%.o: tls/%.c | $(DEPS_STAMP)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@
TLS_TEST_BIN := $(patsubst %.c,$(BUILD)/%,$(wildcard tests/unit/test_tls*.c))
$(TLS_TEST_BIN): $(BUILD)/tests/%: tests/%.c $(LIB_TLS) $(LIB_COMMON) | $(DEPS_STAMP)
	$(call msg,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -Itests -o $@ $< $(LIB_TLS) $(LIB_COMMON) $(PKG_LIBS)

# istio/ (the Istio object model: policy and telemetry) needs only jansson and common/; its
# unit tests link libistio and libcommon.
$(call obj,$(ISTIO_SRC)): $(BUILD)/istio/%.o: istio/%.c | $(DEPS_STAMP)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@
ISTIO_TEST_BIN := $(patsubst %.c,$(BUILD)/%,$(wildcard tests/unit/test_istio*.c))
$(ISTIO_TEST_BIN): $(BUILD)/tests/%: tests/%.c $(LIB_ISTIO) $(LIB_COMMON) | $(DEPS_STAMP)
	$(call msg,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -Itests -o $@ $< $(LIB_ISTIO) $(LIB_COMMON) $(PKG_LIBS)

# ambit-ca's unit tests link its modules (all of ca/ but main.c) with the agent libraries.
CA_TEST_BIN := $(patsubst %.c,$(BUILD)/%,$(wildcard tests/unit/test_ca_server*.c))
$(CA_TEST_BIN): $(BUILD)/tests/%: tests/%.c $(call obj,$(filter-out ca/main.c,$(CA_BIN_SRC))) \
		$(AGENT_LIBS) | $(DEPS_STAMP) $(GENERATED)
	$(call msg,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -Itests -o $@ $< $(filter %.o,$^) $(AGENT_LIBS) $(PKG_LIBS)

# grpc/ needs no generated headers either; its tests link libgrpc, libtls and libcommon.
$(BUILD)/grpc/%.o: grpc/%.c | $(DEPS_STAMP)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@
GRPC_TEST_BIN := $(patsubst %.c,$(BUILD)/%,$(wildcard tests/unit/test_grpc*.c))
$(GRPC_TEST_BIN): $(BUILD)/tests/%: tests/%.c $(LIB_GRPC) $(LIB_TLS) $(LIB_COMMON) | $(DEPS_STAMP)
	$(call msg,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -Itests -o $@ $< $(LIB_GRPC) $(LIB_TLS) $(LIB_COMMON) $(PKG_LIBS)

# otlp/ tests link only libotlp, libgrpc (the gRPC exporter), libtls and libcommon, so they
# build while agent/ does not.
OTLP_TEST_BIN := $(patsubst %.c,$(BUILD)/%,$(wildcard tests/unit/test_otlp*.c))
$(OTLP_TEST_BIN): $(BUILD)/tests/%: tests/%.c $(LIB_OTLP) $(LIB_GRPC) $(LIB_TLS) $(LIB_COMMON) | $(DEPS_STAMP) $(PROTO_H)
	$(call msg,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -Itests -I$(BUILD)/otlp/pb -o $@ $< $(LIB_OTLP) $(LIB_GRPC) $(LIB_TLS) $(LIB_COMMON) $(PKG_LIBS)

.PHONY: test-deps test-build test unit-test bpf-test lab-test
# npm packages for the independent decoders/validators used by tests (not for the product).
test-deps: $(DEPS_STAMP)
	$(Q)./tests/node/install.sh

test-build: all $(UNIT_BIN) $(BPFT_BIN) $(TOOL_BIN)

# `make test` builds everything with ASan/UBSan in $(BUILD)/san and runs every layer.
TEST_SAN ?= address,undefined
test: $(DEPS_STAMP)
	$(Q)$(MAKE) --no-print-directory BUILD=$(BUILD)/san SAN=$(TEST_SAN) test-build
	$(Q)$(MAKE) --no-print-directory test-deps
	$(Q)$(MAKE) --no-print-directory fuzz-build
	$(Q)AMBIT_BUILD=$(BUILD)/san AMBIT_FUZZ_BUILD=$(BUILD)/fuzz ./tests/run.sh all

unit-test bpf-test lab-test: $(DEPS_STAMP)
	$(Q)$(MAKE) --no-print-directory BUILD=$(BUILD)/san SAN=$(TEST_SAN) test-build
	$(Q)AMBIT_BUILD=$(BUILD)/san ./tests/run.sh $(@:-test=)

# ---- fuzzing (tests/fuzz/README.md) ----
# One libFuzzer target per parser, linked against the real modules compiled again with clang
# and the fuzzer flags in $(BUILD)/fuzz. `make fuzz` runs each for FUZZ_SECONDS (FUZZ=name
# for one); `make test` runs a short smoke pass of each (the tests/run.sh fuzz layer).
FUZZ_NAMES   := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/*.c))
FUZZ         ?= $(FUZZ_NAMES)
FUZZ_SECONDS ?= 60
FUZZ_SAN     := fuzzer-no-link,address,undefined
.PHONY: fuzz fuzz-build fuzz-test
fuzz-build: $(DEPS_STAMP)
	$(Q)$(MAKE) --no-print-directory BUILD=$(BUILD)/fuzz CC=$(CLANG) SAN=$(FUZZ_SAN) \
		CFLAGS="-O1 -g" fuzz-bins
fuzz: fuzz-build
	$(Q)set -e; for t in $(FUZZ); do \
		mkdir -p $(BUILD)/fuzz/corpus/$$t $(BUILD)/fuzz/crashes; \
		echo "  FUZZ     $$t ($(FUZZ_SECONDS) s)"; \
		$(BUILD)/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix=$(BUILD)/fuzz/crashes/$$t- \
			$(BUILD)/fuzz/corpus/$$t tests/fuzz/corpus/$$t; \
	done
fuzz-test: fuzz-build
	$(Q)AMBIT_FUZZ_BUILD=$(BUILD)/fuzz ./tests/run.sh fuzz
ifneq ($(filter fuzzer%,$(SAN)),)	# only in the fuzz-build sub-make, where BUILD is .../fuzz
$(addprefix $(BUILD)/,$(FUZZ_NAMES)): $(BUILD)/%: tests/fuzz/%.c tests/fuzz/fuzz.h $(AGENT_LIBS) \
		| $(DEPS_STAMP) $(GENERATED)
	$(call msg,FUZZLD,$@)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -fsanitize=fuzzer -Itests -o $@ $< \
		$(filter %.o,$^) $(AGENT_LIBS) $(PKG_LIBS)
# ca_wire and ca_jwt fuzz ambit-ca's reading of the bearer token: ca/auth.c is in the binary's
# objects, not in libca.
$(BUILD)/ca_wire $(BUILD)/ca_jwt: $(BUILD)/ca/auth.o
.PHONY: fuzz-bins
fuzz-bins: $(addprefix $(BUILD)/,$(FUZZ_NAMES))
	@:
endif

# ---- container image (deploy/Dockerfile; README "Install") ----
# CONTAINER_ENGINE: docker when its daemon answers (or podman is absent), else podman.
CONTAINER_ENGINE ?= $(shell if command -v docker >/dev/null 2>&1 && { docker info >/dev/null 2>&1 || \
	! command -v podman >/dev/null 2>&1; }; then echo docker; elif command -v podman >/dev/null 2>&1; \
	then echo podman; else echo docker; fi)
IMAGE ?= ambit:$(VERSION)
.PHONY: image
image:
	$(CONTAINER_ENGINE) build -f deploy/Dockerfile --build-arg GIT_REV=$(GIT_REV) -t $(IMAGE) .

# ---- lab demo and benchmarks ----
.PHONY: demo bench soak clean
demo: all $(TOOL_BIN)
	$(Q)AMBIT_BUILD=$(BUILD) ./deploy/lab/demo.sh

bench: all
	$(Q)$(MAKE) --no-print-directory $(TOOL_BIN)
	$(Q)./bench/run.sh

# In-process CPU cost of request spans (bench/spanbench.c, bench/README.md): not a test.
SPANBENCH := $(BUILD)/bench/spanbench
$(SPANBENCH): bench/spanbench.c tests/reqspan_rig.h $(AGENT_LIBS) | $(DEPS_STAMP) $(GENERATED)
	$(call msg,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -Itests -o $@ $< $(AGENT_LIBS) $(PKG_LIBS)

.PHONY: bench-spans
bench-spans: $(SPANBENCH)
	$(Q)$(SPANBENCH)

# Not in CI: SOAK_MINUTES (default 30) of mixed traffic with pod and config churn (bench/README.md).
soak: all
	$(Q)$(MAKE) --no-print-directory $(TOOL_BIN)
	$(Q)./bench/soak.sh

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
