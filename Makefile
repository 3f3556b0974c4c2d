# Everyday targets.  `make demo` and `make test` work from a clean clone with only
# Python 3.10-3.12 and access to PyPI: both create the virtualenv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CODE := pipelines transforms schemas

.PHONY: install demo test lint format typecheck model shared-mix bench clean prism

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[gcp,test,dev]'
	touch $(STAMP)

install: $(STAMP)

## Run the demo mix end to end on the in-process runner; output in out/demo/.
demo: $(STAMP)
	$(VENV)/bin/tropemix run examples/demo.yaml

## Beam's Prism runner (Go), built from source at the pinned Beam version into the
## virtualenv. `make test` builds it when Go is installed, and the suite then checks
## that Prism writes the same bytes as the in-process runner; without it that test skips.
BEAM_VERSION := 2.77.0
PRISM := $(VENV)/bin/prism
$(PRISM): | $(STAMP)
	-GOBIN=$(abspath $(VENV)/bin) go install github.com/apache/beam/sdks/v2/go/cmd/prism@v$(BEAM_VERSION)

prism: $(PRISM)

## Lint, format check, type check, then the whole test suite.
test: lint $(if $(shell command -v go),$(PRISM))
	$(PY) -m pytest -n 2 --dist loadfile tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(CODE)

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## Rebuild the shipped classifier (deterministic): the hand-labeled real-text excerpts
## (data/train/), weak labels mined from ../shared/data/wikipedia (with behaviour labels
## for the actor x behaviour factors), template records, the hand-written seed set;
## evaluated on the held-out real-text dev sets (both are excluded from the weak labels).
WIKIPEDIA ?= ../shared/data/wikipedia
model: $(STAMP)
	mkdir -p build
	$(PY) -m pipelines.weak_labels --behaviours --input '$(WIKIPEDIA)/*.jsonl.gz' \
		--exclude data/dev/wikipedia_dev.jsonl data/dev/unseen_dev.jsonl --labeled data/train/wikipedia_train.jsonl \
		--output build/weak_labels.jsonl
	$(PY) -m pipelines.seed_templates --templates data/seed/templates.yaml --per-label 120 \
		--output build/template_records.jsonl
	$(VENV)/bin/tropemix train-classifier --params models/train.yaml --output models/tropes-v0.ftz \
		--data data/seed/tropes_seed.jsonl build/template_records.jsonl build/weak_labels.jsonl \
		data/train/wikipedia_train.jsonl \
		--eval-data data/dev/wikipedia_dev.jsonl data/dev/unseen_dev.jsonl

## A bigger local run over ../shared/data (Wikipedia, web pages, constitution).
shared-mix: $(STAMP)
	$(VENV)/bin/tropemix run examples/shared_data.yaml -- --direct_num_workers=2 --direct_running_mode=multi_processing

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
