# Order aggregator: small C programs over one shared library (src/lib).
# make | make check | make check SANITIZE=1 | make demo | make bench | make install PREFIX=... | make deb

VERSION  = 0.1.0
PREFIX  ?= /usr/local
# The installed layout, the same for `make install` and the Debian package
# (order-aggregator(7)): every program in LIBEXECDIR, as git keeps its
# commands in git-core, and a link in BINDIR for each one whose name Debian's
# amqp-tools does not use. SYSCONFDIR is where the units read order-aggregator/env.
LIBEXECDIR  ?= $(PREFIX)/lib/order-aggregator
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
SYSTEMDDIR  ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
SYSCONFDIR  ?= /etc
# Where `make deb` builds the package (the .deb lands in DEBDIR itself).
DEBDIR      ?= build/deb

CC      ?= cc
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -DOA_VERSION='"$(VERSION)"'
CPPFLAGS += -I/usr/include/postgresql -Ibuild -Isrc
LDLIBS   = -lpq -lrabbitmq -lcurl -lcjson -lmicrohttpd -lpthread -lm

ifeq ($(SANITIZE),1)
# float-cast-overflow is not part of gcc's "undefined": a double out of an
# integer's range (1e308) converted in C is caught only when asked for.
CFLAGS  += -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=address,undefined,float-cast-overflow
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
	scripts/deps bench
	scripts/bench/run

# libFuzzer harnesses (tests/fuzz/fuzz-NAME.c), built with clang and run
# for FUZZ_SECONDS each, one after the other; FUZZ=NAME runs only that one.
# Each keeps the inputs that found new paths in tests/fuzz/corpus/NAME (its
# seeds are committed); a crash is saved in build/fuzz/NAME-crash-* and stops
# the run. Not part of `make check`.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_CFLAGS   = -O1 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -DOA_VERSION='"$(VERSION)"' \
	-fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZERS      = $(patsubst tests/fuzz/fuzz-%.c,%,$(wildcard tests/fuzz/fuzz-*.c))
FUZZ         ?= $(FUZZERS)
FUZZ_LIBOBJ  = $(patsubst src/lib/%.c,build/fuzz/lib/%.o,$(LIBSRC))

build/fuzz/lib/%.o: src/lib/%.c src/lib/*.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

build/fuzz/liboa.a: $(FUZZ_LIBOBJ)
	$(AR) rcs $@ $^

build/fuzz/fuzz-%: tests/fuzz/fuzz-%.c build/fuzz/liboa.a
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< build/fuzz/liboa.a $(LDLIBS)

fuzz-build: $(addprefix build/fuzz/fuzz-,$(FUZZERS))

fuzz: fuzz-build

fuzz-build: fuzz-deps

fuzz-deps:
	scripts/deps fuzz
	@for f in $(FUZZ); do \
		echo "fuzz: $$f for $(FUZZ_SECONDS) s"; \
		mkdir -p tests/fuzz/corpus/$$f && \
		build/fuzz/fuzz-$$f -max_total_time=$(FUZZ_SECONDS) -timeout=10 -max_len=16384 \
			-close_fd_mask=2 -print_final_stats=1 -artifact_prefix=build/fuzz/$$f- \
			tests/fuzz/corpus/$$f 2>build/fuzz/$$f.log || \
			{ tail -n 60 build/fuzz/$$f.log; echo "fuzz: $$f failed; its log: build/fuzz/$$f.log"; exit 1; }; \
		grep -E "^stat::(number_of_executed_units|peak_rss_mb)|DONE" build/fuzz/$$f.log; \
	done

# Debian's amqp-tools has programs and man pages of these names: ours stay in
# LIBEXECDIR, their pages go in as section 1oa (man 1oa amqp-consume) and in
# LIBEXECDIR/man, which man(1) searches first when LIBEXECDIR leads PATH.
CLASHING     = amqp-publish amqp-consume
SCRIPTS      = sync-stock
LINKED       = $(filter-out $(CLASHING),$(PROGS) $(SCRIPTS))
MAN1         = $(filter-out $(CLASHING),$(patsubst man/man1/%.1,%,$(wildcard man/man1/*.1)))
MAN7         = $(patsubst man/man7/%.7,%,$(wildcard man/man7/*.7))
UNITFILES    = $(notdir $(wildcard scripts/systemd/*.service scripts/systemd/*.timer))
INSTALLED    = $(addprefix $(LIBEXECDIR)/,$(PROGS) $(SCRIPTS)) $(addprefix $(BINDIR)/,$(LINKED)) \
	$(addprefix $(MANDIR)/man1/,$(addsuffix .1,$(MAN1)) $(addsuffix .1oa,$(CLASHING))) \
	$(addprefix $(MANDIR)/man7/,$(addsuffix .7,$(MAN7))) $(addprefix $(SYSTEMDDIR)/,$(UNITFILES)) \
	$(SYSUSERSDIR)/order-aggregator.conf $(TMPFILESDIR)/order-aggregator.conf

# Installing into the live system (no DESTDIR) never replaces a file that a
# Debian package owns (amqp-tools', or this project's own package): dpkg would
# not know, and the next upgrade would silently undo it. Checked before
# anything is copied, so a refusal leaves nothing half installed.
install: all
	@if [ -z "$(DESTDIR)" ] && command -v dpkg >/dev/null 2>&1; then \
		owned=$$(dpkg -S $(INSTALLED) 2>/dev/null | grep -v '^diversion ' || true); \
		if [ -n "$$owned" ]; then \
			echo "make install: refusing to overwrite files that belong to Debian packages:" >&2; \
			echo "$$owned" | sed 's/^/  /' >&2; \
			echo "make install: remove the package, or choose another PREFIX (e.g. PREFIX=/usr/local)" >&2; \
			exit 1; \
		fi; \
	fi
	install -d $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(LIBEXECDIR)/man/man1 $(DESTDIR)$(BINDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(SYSTEMDDIR) \
		$(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR)
	install -m 755 $(addprefix bin/,$(PROGS)) $(addprefix scripts/,$(SCRIPTS)) $(DESTDIR)$(LIBEXECDIR)
	for p in $(LINKED); do ln -sfn $$(realpath -m --relative-to=$(BINDIR) $(LIBEXECDIR)/$$p) $(DESTDIR)$(BINDIR)/$$p || exit 1; done
	install -m 644 $(addprefix man/man1/,$(addsuffix .1,$(MAN1))) $(DESTDIR)$(MANDIR)/man1
	install -m 644 $(addprefix man/man7/,$(addsuffix .7,$(MAN7))) $(DESTDIR)$(MANDIR)/man7
	for p in $(CLASHING); do \
		install -m 644 man/man1/$$p.1 $(DESTDIR)$(MANDIR)/man1/$$p.1oa && \
		install -m 644 man/man1/$$p.1 $(DESTDIR)$(LIBEXECDIR)/man/man1/$$p.1 || exit 1; \
	done
	for u in $(UNITFILES); do \
		sed 's#/usr/lib/order-aggregator\([/:]\)#$(LIBEXECDIR)\1#g; s#/etc/order-aggregator/#$(SYSCONFDIR)/order-aggregator/#g' \
			scripts/systemd/$$u > $(DESTDIR)$(SYSTEMDDIR)/$$u && chmod 644 $(DESTDIR)$(SYSTEMDDIR)/$$u || exit 1; \
	done
	install -m 644 scripts/systemd/order-aggregator.sysusers $(DESTDIR)$(SYSUSERSDIR)/order-aggregator.conf
	install -m 644 scripts/systemd/order-aggregator.tmpfiles $(DESTDIR)$(TMPFILESDIR)/order-aggregator.conf
	@# The env file: examples only, commented out, and never over an existing one.
	@if [ ! -e $(DESTDIR)$(SYSCONFDIR)/order-aggregator/env ]; then \
		install -d $(DESTDIR)$(SYSCONFDIR)/order-aggregator && \
		sed 's/^\([A-Z][A-Z0-9_]*=\)/#\1/' scripts/systemd/env.example > $(DESTDIR)$(SYSCONFDIR)/order-aggregator/env && \
		chmod 640 $(DESTDIR)$(SYSCONFDIR)/order-aggregator/env && \
		echo "install: wrote $(DESTDIR)$(SYSCONFDIR)/order-aggregator/env (mode 0640, examples only)"; \
	fi
	@if [ -z "$(DESTDIR)" ]; then \
		echo "install: next, as root: systemd-sysusers; systemd-tmpfiles --create;" \
			"chgrp order-aggregator $(SYSCONFDIR)/order-aggregator/env; systemctl daemon-reload" \
			"(see order-aggregator(7))"; \
	fi

# A Debian package built with debhelper from a copy of the tree in DEBDIR
# (nothing of the build lands in the tree or in ..), without network:
# DEBDIR/order-aggregator_$(VERSION)_ARCH.deb. MAKEFLAGS is dropped so that
# `make check SANITIZE=1` never builds a sanitized package.
deb:
	rm -rf $(DEBDIR)/order-aggregator-$(VERSION)
	mkdir -p $(DEBDIR)/order-aggregator-$(VERSION)
	tar -cf - --exclude=./build --exclude=./bin --exclude=./var --exclude=./.git . | \
		tar -C $(DEBDIR)/order-aggregator-$(VERSION) -xf -
	sed -i '1s/([^)]*)/($(VERSION))/' $(DEBDIR)/order-aggregator-$(VERSION)/debian/changelog
	cd $(DEBDIR)/order-aggregator-$(VERSION) && \
		env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL dpkg-buildpackage -b --no-sign
	rm -rf $(DEBDIR)/order-aggregator-$(VERSION)
	@ls $(DEBDIR)/order-aggregator_$(VERSION)_*.deb

lint-man:
	for m in man/man1/*.1 man/man7/*.7; do groff -mandoc -ww -z $$m || exit 1; done

clean:
	rm -rf build bin

.PHONY: all check demo bench deps install deb clean lint-man fuzz fuzz-build fuzz-deps FORCE
.SECONDARY:
