# Two commands matter: `make site` and `make test`. The rest are their steps.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# The venv is always built with $(PY): the stamp names its interpreter, so another PY rebuilds it.
PYWHICH := $(shell $(PY) -c 'import sys; print(sys.implementation.cache_tag + "-" + ".".join(map(str, sys.version_info[:3])))' 2>/dev/null)
ifeq ($(PYWHICH),)
$(error PY=$(PY) is not a Python interpreter: pass PY=/path/to/python3.11 (3.11, 3.12 or 3.13))
endif
STAMP   := $(VENV)/.installed-$(PYWHICH)

# The second venv: the oldest supported set (constraints/oldest.txt) from the registry, the lock's
# versions for everything else, and this checkout's dispel (editable); `make regen` records the
# sample there (traces/oldest/) and `dispel check` proves the oldest set's links against it.
OLDEST  := .venv-oldest
OBIN    := $(OLDEST)/bin
OSTAMP  := $(OLDEST)/.installed-$(PYWHICH)

.PHONY: site test test-fast lint serve record chains pin render regen regen-oldest check check-online bench clean handin

# The pinned environment: every package at the exact version of requirements.lock.
$(STAMP): requirements.lock pyproject.toml scripts/dispel/record/_ctracer.c
	# a venv of another interpreter (or from before the stamp named one) is made anew
	if ! test -x $(BIN)/python || [ "$$($(BIN)/python -c 'import sys; print(sys.implementation.cache_tag + "-" + ".".join(map(str, sys.version_info[:3])))' 2>/dev/null)" != "$(PYWHICH)" ]; then rm -rf $(VENV) && $(PY) -m venv $(VENV); fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	# the C core is rebuilt from its source, never kept from an earlier build that now fails
	rm -f scripts/dispel/record/_ctracer*.so
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	# bytecode for dispel's own modules too (pip compiled the others): every dispel process
	# would otherwise compile them again where PYTHONDONTWRITEBYTECODE is set
	$(BIN)/python -m compileall -q scripts/dispel
	$(BIN)/python -c "from dispel.record.cores import c_core_missing as m; m() and print('note: ' + m() + ' (it needs gcc and the Python headers); the Python cores record instead')"
	if command -v npm >/dev/null; then npm ci --prefix scripts/dispel/sample_app --no-audit --no-fund --silent; else echo "note: npm not found, skipping scripts/dispel/sample_app's JavaScript client (the browser scenario needs it)"; fi
	touch $(STAMP)

# Without the registry the second venv is left out, in one line: `dispel check` then says the
# oldest set's links are unproven (and counts none of them), and `make regen` does not record there.
$(OSTAMP): constraints/oldest.txt requirements.lock pyproject.toml | $(STAMP)
	rm -rf $(OLDEST) && $(PY) -m venv $(OLDEST)
	awk -F'==' 'NR == FNR { if ($$0 !~ /^#/ && NF == 2) old[tolower($$1)] = 1; next } !(tolower($$1) in old)' constraints/oldest.txt requirements.lock > $(OLDEST)/constraints.txt
	cat constraints/oldest.txt >> $(OLDEST)/constraints.txt
	if $(OBIN)/python -m pip install --quiet --disable-pip-version-check --retries 1 --timeout 30 -c $(OLDEST)/constraints.txt setuptools -r constraints/oldest.txt \
	   && $(OBIN)/python -m pip install --quiet --disable-pip-version-check -c $(OLDEST)/constraints.txt --no-build-isolation -e '.[browser,queue]'; \
	then touch $(OSTAMP); \
	else rm -rf $(OLDEST); echo "note: the oldest supported set could not be installed from the registry: $(OLDEST) left out, its links unproven"; fi

# The site, from the committed traces, chains, lock and annotations; first a warning for
# every installed version that differs from the lock (the pages would mix the two).
site: $(STAMP) $(OSTAMP)
	$(BIN)/dispel versions --warn
	$(BIN)/dispel render
	$(BIN)/mkdocs build --strict --quiet

# pytest, then the checks; --rerecord also records the scenarios afresh and
# compares them with the committed traces. Without Chromium (or with
# DISPEL_CHROMIUM=/nonexistent) the browser's tests and re-recording are skipped, saying why.
# The tests run on JOBS workers (pytest-xdist), a test file per worker at a time: the recordings
# wait on their clients, so two workers keep two cores busy. Those marked `serial` run alone
# afterwards (tests/conftest.py says why). JOBS=0 runs everything in this process.
JOBS    ?= 2
test: lint $(OSTAMP)
ifeq ($(JOBS),0)
	$(BIN)/python -m pytest
else
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile -m "not serial"
	$(BIN)/python -m pytest -m serial
endif
	$(BIN)/dispel check --rerecord

# The gates before the tests: ruff (the package and the tests) and mypy (the package), both
# pinned in requirements.lock and configured in pyproject.toml (target Python 3.11, whatever runs them).
lint: $(STAMP)
	$(BIN)/ruff check --quiet scripts/dispel tests
	$(BIN)/mypy

# The pure suite only: no recording, no site build, no subprocess (seconds).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

serve: $(STAMP)
	$(BIN)/mkdocs serve -a 127.0.0.1:8000

# Regeneration after an upgrade: record -> chains -> render. When a library version
# changes, re-pin first: make pin PIN_ARGS="--git-dir OWNER/REPO=PATH" (only the changed
# libraries need a mirror or the network), then review with `dispel diff`.
record: $(STAMP)
	$(BIN)/dispel record

chains: $(STAMP)
	$(BIN)/dispel chains

pin: $(STAMP)
	$(BIN)/dispel pin $(PIN_ARGS)

render: $(STAMP)
	$(BIN)/dispel render

# The sample at the oldest supported set, by the second venv's dispel: traces/oldest/ and its chains.
regen-oldest: $(STAMP) $(OSTAMP)
	if test -x $(OBIN)/dispel; then \
	  $(OBIN)/dispel record --out traces/oldest $$($(OBIN)/python -c 'from dispel.review.versions import SCENARIOS; print(*SCENARIOS)') \
	  && $(OBIN)/dispel chains --traces traces/oldest; \
	else echo "note: no $(OLDEST): the oldest supported set is not re-recorded"; fi

regen: record chains regen-oldest render

check: $(STAMP)
	$(BIN)/dispel check

# The hand-in on the course template (report.md, report.docx, report.pdf; not committed),
# then its links proven in every format. Without Chromium the PDF is skipped with a note.
handin: $(STAMP)
	$(BIN)/dispel handin --out site/handin
	$(BIN)/dispel check --handin site/handin

# The only target that uses the network: fetch every linked file at its pinned commit.
check-online: $(STAMP)
	$(BIN)/dispel check --online --cache-dir .cache/raw

bench: $(STAMP)
	$(BIN)/dispel bench

clean:
	rm -rf site .pytest_cache .mypy_cache .ruff_cache test-output
