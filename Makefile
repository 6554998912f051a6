# `make test` and `make serve` each create .venv on a fresh machine (Python 3.10+) and install what
# they need. torch comes first, pinned, so pip takes the local wheel instead of downloading a CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: test serve venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

serve: $(STAMP)
	@echo "The HTTP service is not built yet (issue 5); 'make serve' will run it on the bundled demo model." >&2
	@exit 1

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
