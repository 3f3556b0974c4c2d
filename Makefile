# Everyday targets.  `make demo` and `make test` work from a clean clone with only
# Python 3.10-3.12 and access to PyPI: both create the virtualenv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CODE := pipelines transforms schemas training

.PHONY: install demo recipe test lint format model shared-mix fingerprint clean prism chromium

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[gcp,test,dev]'
	touch $(STAMP)

install: $(STAMP)

## Run the demo mix end to end on the in-process runner; output in out/demo/.
demo: $(STAMP)
	$(VENV)/bin/tropemix run examples/demo.yaml

## The flagship recipe (README, "The recipe"): web text, stories, the constitution and
## difficult-advice conversations on token budgets, decontaminated against eval
## scenarios; output in out/recipe/.  Needs ../shared/data beside the repo.
recipe: $(STAMP)
	$(VENV)/bin/tropemix run examples/recipe.yaml

## Beam's Prism runner (Go), built from source at the pinned Beam version into the
## virtualenv. `make test` builds it when Go is installed, and the suite then checks
## that Prism writes the same bytes as the in-process runner; without it that test skips.
BEAM_VERSION := 2.77.0
PRISM := $(VENV)/bin/prism
$(PRISM): | $(STAMP)
	-GOBIN=$(abspath $(VENV)/bin) go install github.com/apache/beam/sdks/v2/go/cmd/prism@v$(BEAM_VERSION)

prism: $(PRISM)

## Chromium, for the check that report.html renders in a real browser (tests/test_report.py
## skips it without one): installed with apt-get unless a chromium is on PATH.  Without root
## or apt-get the tests go on without it, except under CI (set by .ci/run), where it must be there.
APT_GET := $(if $(filter 0,$(shell id -u)),,sudo -n )apt-get -q -o DPkg::Lock::Timeout=600
chromium:
	@command -v chromium >/dev/null || $(APT_GET) install -y chromium \
		|| { $(APT_GET) update && $(APT_GET) install -y chromium; } \
		|| { echo "chromium not installed: the browser check of report.html will skip" >&2; $(if $(CI),false,true); }

## Lint, format check, type check, then the whole test suite.
test: lint chromium $(if $(shell command -v go),$(PRISM))
	$(PY) -m pytest -n 2 --dist loadfile tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(CODE)

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## Rebuild the shipped classifier (deterministic) from the committed annotations
## (data/annotation/labels/, adjudicated.jsonl) joined with the texts of ../shared/data:
## grouped 5-fold cross-validation by work, thresholds from the out-of-fold scores, then
## the model on every record and its card (scores next to the keyword baseline), and one
## read of the fixed dev sets.
SHARED ?= ../shared/data
model: $(STAMP)
	$(VENV)/bin/tropemix train-classifier --labels data/annotation --shared $(SHARED) \
		--params models/train.yaml --output models/tropes-v1.ftz \
		--dev data/dev/wikipedia_dev.jsonl data/dev/unseen_dev.jsonl

## A bigger local run over ../shared/data (Wikipedia, web pages, constitution).
shared-mix: $(STAMP)
	$(VENV)/bin/tropemix run examples/shared_data.yaml -- --direct_num_workers=2 --direct_running_mode=multi_processing

## sha256 of every file the demo, the recipe and (CORPUS=a benchmarks/corpus.py directory) a
## corpus publish; run before and after a refactor and diff: the bytes must not change.
fingerprint: $(STAMP)
	$(PY) benchmarks/fingerprint.py $(if $(CORPUS),--corpus $(CORPUS))

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
