# The bus platform: one non-recursive Makefile.
#
#   make            build every program into build/
#   make deps       install the Debian packages the project needs (only the missing ones)
#   make test       unit tests, then integration/chaos tests against private servers
#   make sanitize   the same tests built with ASan+UBSan (into build/san)
#   make fuzz       run the libFuzzer targets for a while
#   make test-cluster  the cluster suite: a private 3-node RabbitMQ cluster, quorum queues,
#                   nodes SIGKILLed under load (tests/cluster/run.sh; about 2 minutes; CI runs it after `make test`)
#   make bench      benchmarks (libbus vs a plain rabbitmq-c baseline, edge, store, schema)
#   make run        the whole platform in the foreground; Ctrl-C stops everything
#   make install PREFIX=/usr/local
.DEFAULT_GOAL := all
VERSION   := 0.1.0
BUILD     ?= build
PREFIX    ?= /usr/local
CC        ?= cc
PKGS      := librabbitmq libuv libcjson hiredis libcurl sqlite3 libpcre2-8 libcrypto
OPT       ?= -O2
SAN_FLAGS ?=

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# The MongoDB backend is a plugin, loaded only for BUS_STORE=mongodb://...:
# libmongoc initialises OpenSSL and loads the SASL plugins as soon as it is
# linked, which cost every SQLite worker 7 MB of RSS.
MONGO_CFLAGS := $(shell pkg-config --cflags libmongoc-1.0 2>/dev/null)
MONGO_LIBS   := $(shell pkg-config --libs libmongoc-1.0 2>/dev/null)
MONGO_PLUGIN := $(BUILD)/libbus-mongo.so
LLHTTP_DIR := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp

CFLAGS_COMMON := -std=c11 -D_GNU_SOURCE -g $(OPT) $(SAN_FLAGS) -fno-omit-frame-pointer \
                 -DBUS_VERSION=\"$(VERSION)\" -DBUS_DATADIR=\"$(PREFIX)/share/bus\" -Ibus/include -I$(LLHTTP_INC) $(PKG_CFLAGS)
CFLAGS_OWN    := $(CFLAGS_COMMON) -Wall -Wextra -Werror -MMD -MP
# llhttp is packaged generated code: its own relaxed flags
CFLAGS_LLHTTP := -std=c11 -g $(OPT) $(SAN_FLAGS) -w -I$(LLHTTP_INC)
LDLIBS        := $(PKG_LIBS) -lpthread -lm
# the plugin calls back into the program's store helpers and log
MONGO_SYMS    := bus/src/store_mongo.syms
LDFLAGS       += $(SAN_FLAGS) -Wl,--as-needed -Wl,--dynamic-list=$(MONGO_SYMS)

LIB_SRC    := $(filter-out bus/src/store_mongo.c,$(sort $(wildcard bus/src/*.c)))
LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) \
              $(BUILD)/obj/llhttp/llhttp.o $(BUILD)/obj/llhttp/api.o $(BUILD)/obj/llhttp/http.o
LIBBUS     := $(BUILD)/libbus.a

DOMAINS    := verification alliances events notifications audit
PROGRAMS   := $(DOMAINS:%=$(BUILD)/bus-%) $(BUILD)/bus-gateway $(BUILD)/busctl

UNIT_SRC   := $(sort $(wildcard tests/unit/test_*.c))
INTEG_SRC  := $(sort $(wildcard tests/integration/test_*.c))
CHAOS_SRC  := $(sort $(wildcard tests/chaos/test_*.c))
BENCH_SRC  := $(sort $(wildcard tests/bench/*.c))
TEST_BINS  := $(UNIT_SRC:%.c=$(BUILD)/%) $(INTEG_SRC:%.c=$(BUILD)/%) $(CHAOS_SRC:%.c=$(BUILD)/%)
BENCH_BINS := $(BENCH_SRC:%.c=$(BUILD)/%)

.PHONY: test-cluster
# ---- cluster suite (tests/cluster/): built and run only by `make test-cluster`
CLUSTER_BINS := $(patsubst %.c,$(BUILD)/%,$(sort $(wildcard tests/cluster/test_*.c)))
test-cluster: deps
	@$(MAKE) --no-print-directory all $(CLUSTER_BINS)
	@BUILD=$(BUILD) tests/cluster/run.sh
# deploy/ files checked (systemd-analyze, YAML, Kubernetes schemas, dashboard metrics); also run by `make test`
.PHONY: test-deploy
test-deploy: all
	@BUILD=$(BUILD) tests/deploy/test_deploy.sh
# a mixed load over every domain for SOAK_MIN minutes; fails on RSS/fd growth (tests/soak/run.sh)
.PHONY: soak
soak: deps
	@$(MAKE) --no-print-directory all $(BENCH_BINS)
	@BUILD=$(BUILD) SOAK_MIN=$(or $(SOAK_MIN),10) tests/soak/run.sh
# ---- end cluster suite

.PHONY: all deps test unit sanitize fuzz bench run install clean programs tests
all: $(PROGRAMS) $(MONGO_PLUGIN)
programs: $(PROGRAMS) $(MONGO_PLUGIN)
tests: $(TEST_BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS_OWN) -c $< -o $@

$(BUILD)/obj/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	@echo "  CC    $< (packaged llhttp)"
	@$(CC) $(CFLAGS_LLHTTP) -c $< -o $@

$(BUILD)/obj/mongo/store_mongo.o: bus/src/store_mongo.c
	@mkdir -p $(dir $@)
	@echo "  CC    $< (plugin)"
	@$(CC) $(CFLAGS_OWN) $(MONGO_CFLAGS) -fPIC -c $< -o $@

$(MONGO_PLUGIN): $(BUILD)/obj/mongo/store_mongo.o
	@echo "  LD    $@"
	@$(CC) -shared $(SAN_FLAGS) -o $@ $< $(MONGO_LIBS)

$(LIBBUS): $(LIB_OBJ)
	@rm -f $@
	@echo "  AR    $@"
	@ar rcs $@ $^

# A program is every .c of its folder, linked with libbus.
define program
$(BUILD)/$(1): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard $(2)/*.c)) $(LIBBUS) $(MONGO_SYMS)
	@echo "  LD    $$@"
	@$$(CC) $$(LDFLAGS) -o $$@ $$(filter-out $(MONGO_SYMS),$$^) $$(LDLIBS)
endef
$(foreach d,$(DOMAINS),$(eval $(call program,bus-$(d),workers/$(d))))
$(eval $(call program,bus-gateway,gateway))
$(eval $(call program,busctl,bus/cli))

# Test and bench programs: one .c each (plus tests/support/*.c), linked with libbus.
SUPPORT_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tests/support/*.c))
$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(SUPPORT_OBJ) $(LIBBUS) $(MONGO_SYMS)
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) $(LDFLAGS) -o $@ $(filter-out $(MONGO_SYMS),$^) $(LDLIBS)

deps:
	@deploy/local/deps.sh

unit: $(UNIT_SRC:%.c=$(BUILD)/%)
	@BUILD=$(BUILD) tests/run.sh unit

test: deps
	@$(MAKE) --no-print-directory all tests
	@BUILD=$(BUILD) tests/run.sh all

sanitize: deps
	@$(MAKE) --no-print-directory BUILD=build/san OPT=-O1 \
	    SAN_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" all tests
	@BUILD=build/san BUS_SANITIZE=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 tests/run.sh all

FUZZ_SRC    := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_CC     := clang
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer-no-link,address,undefined -Ibus/include \
               -I$(LLHTTP_INC) $(PKG_CFLAGS) -DBUS_VERSION=\"$(VERSION)\"
FUZZ_OBJ    := $(LIB_SRC:%.c=$(BUILD)/fuzzobj/%.o) $(BUILD)/fuzzobj/llhttp/llhttp.o \
               $(BUILD)/fuzzobj/llhttp/api.o $(BUILD)/fuzzobj/llhttp/http.o
$(BUILD)/fuzzobj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC    $< (fuzz)"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@
$(BUILD)/fuzzobj/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -w -c $< -o $@
$(BUILD)/libbus-fuzz.a: $(FUZZ_OBJ)
	@rm -f $@
	@ar rcs $@ $^
$(BUILD)/fuzz/%: tests/fuzz/%.c $(BUILD)/libbus-fuzz.a
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(BUILD)/libbus-fuzz.a $(LDLIBS)
fuzz-build: $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
fuzz: deps fuzz-build
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-60} BUILD=$(BUILD) tests/run.sh fuzz

bench: deps
	@$(MAKE) --no-print-directory all $(BENCH_BINS)
	@BUILD=$(BUILD) tests/bench/run.sh

run: deps
	@$(MAKE) --no-print-directory all
	@deploy/local/run.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/bus $(DESTDIR)$(PREFIX)/share/bus/schemas
	install -m 755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(MONGO_PLUGIN) $(DESTDIR)$(PREFIX)/lib/bus/
	cp -r schemas/. $(DESTDIR)$(PREFIX)/share/bus/schemas/
	install -d $(DESTDIR)$(PREFIX)/share/bus/i18n && cp workers/notifications/i18n/*.json $(DESTDIR)$(PREFIX)/share/bus/i18n/  # notifications

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
.SECONDARY:
