# `make test` and `make serve` each create .venv on a fresh machine (Python 3.10+) and install what
# they need: `serve` only the ONNX Runtime install (no torch: the demo's ONNX export is committed),
# `test` everything. torch comes first, pinned, so pip takes the local wheel instead of a CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
SERVE_STAMP := $(VENV)/.installed-cpu
DEMO := server/demo/vfnet_r18_demo.safetensors
DEMO_ONNX := server/demo/vfnet_r18_demo.onnx

.PHONY: test serve venv demo-onnx clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(SERVE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[cpu]'
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

# The demo model's ONNX export is committed (weights stored as float16, 24.5 MB), so that `vfnet serve`
# runs it with ONNX Runtime without torch. `make demo-onnx` makes it again from the checkpoint.
demo-onnx: $(STAMP)
	$(BIN)/vfnet export onnx --weights $(DEMO) --out $(DEMO_ONNX) --fp16-storage

serve: $(SERVE_STAMP)
	$(BIN)/vfnet serve

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
