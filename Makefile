# Order aggregator: small C programs over one shared library (src/lib).
# make | make check | make check SANITIZE=1 | make demo | make bench | make install PREFIX=...

VERSION  = 0.1.0
PREFIX  ?= /usr/local
CC      ?= cc
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -DOA_VERSION='"$(VERSION)"'
CPPFLAGS += -I/usr/include/postgresql -Ibuild -Isrc
LDLIBS   = -lpq -lrabbitmq -lcurl -lcjson -lmicrohttpd -lpthread -lm

ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=address,undefined
BUILD    = build/san
else
BUILD    = build/std
endif

PROGS    = $(patsubst src/%.c,%,$(wildcard src/*.c))
LIBSRC   = $(wildcard src/lib/*.c)
LIBOBJ   = $(patsubst src/lib/%.c,$(BUILD)/lib/%.o,$(LIBSRC))
UNITS    = $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(wildcard tests/unit/*.c))
SQL      = $(sort $(wildcard src/sql/*.sql))

all: $(addprefix bin/,$(PROGS)) $(UNITS)

build/migrations.h: $(SQL) scripts/embed-sql
	@mkdir -p build
	scripts/embed-sql $(SQL) > $@.tmp && mv $@.tmp $@

$(BUILD)/lib/%.o: src/lib/%.c src/lib/*.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/liboa.a: $(LIBOBJ)
	$(AR) rcs $@ $^

$(BUILD)/%.o: src/%.c src/lib/*.h build/migrations.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# Programs are rebuilt when the flavour (plain or sanitized) changes.
bin/%: $(BUILD)/%.o $(BUILD)/liboa.a build/.flavour
	@mkdir -p bin
	$(CC) $(LDFLAGS) -o $@ $< $(BUILD)/liboa.a $(LDLIBS)

$(BUILD)/unit/%: tests/unit/%.c $(BUILD)/liboa.a build/.flavour
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/liboa.a $(LDLIBS)

build/.flavour: FORCE
	@mkdir -p build
	@echo "$(BUILD)" | cmp -s - $@ || echo "$(BUILD)" > $@

deps:
	scripts/deps

# The suite starts its own PostgreSQL and RabbitMQ under var/ and stops them.
check: deps all
	scripts/check

demo: deps all
	scripts/demo

bench: deps all
	scripts/bench/run

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 $(addprefix bin/,$(PROGS)) $(DESTDIR)$(PREFIX)/bin
	install -m 755 scripts/sync-stock $(DESTDIR)$(PREFIX)/bin
	install -m 644 man/man1/*.1 $(DESTDIR)$(PREFIX)/share/man/man1

lint-man:
	for m in man/man1/*.1; do groff -mandoc -ww -z $$m || exit 1; done

clean:
	rm -rf build bin

.PHONY: all check demo bench deps install clean lint-man FORCE
.SECONDARY:
