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

# The C++/CUDA plugins (trt_plugins/, see its README): nvcc from PATH, /usr/local/cuda, or the CUDA
# toolchain that `make cuda-toolchain` installs from NVIDIA's PyPI wheels into build/cuda-toolchain;
# the TensorRT headers from TENSORRT_INCLUDE_DIR or the usual install locations.
CUDA_TOOLCHAIN := build/cuda-toolchain
NVCC ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc) \
	$(abspath $(wildcard $(CUDA_TOOLCHAIN)/lib/python*/site-packages/nvidia/cu13/bin/nvcc)))
TENSORRT_INCLUDE_DIR ?=
THIRD_PARTY ?= $(firstword $(wildcard $(abspath ../shared/third_party) /work/shared/third_party))
PLUGIN_BUILD := build/plugins
TEST_WORKERS ?= 2

.PHONY: test serve venv demo-onnx grpc-code clean plugins plugins-check gpu-check device-check device-check-standin cuda-toolchain docker-lint docker-smoke

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

# Two pytest-xdist workers, whole files each (module fixtures stay per file; the session exports are
# made once and shared, tests/conftest.py), one torch thread each.
test: $(STAMP) plugins
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The demo model's ONNX export is committed (weights stored as float16, 24.5 MB), so that `vfnet serve`
# runs it with ONNX Runtime without torch. `make demo-onnx` makes it again from the checkpoint.
demo-onnx: $(STAMP)
	$(BIN)/vfnet export onnx --weights $(DEMO) --out $(DEMO_ONNX) --fp16-storage

# The Python code of the gRPC service's .proto files (server/app/grpc/*_pb2*.py, committed), made
# again with the dev extra's pinned grpcio-tools; tests/server/app/test_grpc_code.py checks they match.
grpc-code: $(STAMP)
	$(BIN)/python -m vfnet.server.app.grpc.generate

serve: $(SERVE_STAMP)
	$(BIN)/vfnet serve

# The GPU and TensorRT tests, for real on a GPU host (elsewhere each skips with its reason). On a host
# whose $(PYTHON) already has torch and pytest (NVIDIA's container, an offline GPU machine) it makes no
# venv: with VENV=none, or when .venv is absent and $(PYTHON) imports both, it runs $(PYTHON) with vfnet
# on PYTHONPATH (build/pythonpath, symlinks onto model/, server/, ...: bench/device_check --pythonpath).
ifneq ($(filter gpu-check,$(MAKECMDGOALS)),)
GPU_CHECK_NO_VENV := $(if $(filter none,$(VENV)),yes,$(if $(wildcard $(BIN)/python),,$(shell $(PYTHON) -c 'import torch, pytest' > /dev/null 2>&1 && echo yes)))
endif
gpu-check: $(if $(GPU_CHECK_NO_VENV),,$(STAMP)) plugins
	$(if $(GPU_CHECK_NO_VENV),PYTHONPATH="$$($(PYTHON) bench/device_check --pythonpath)$${PYTHONPATH:+:$$PYTHONPATH}" $(PYTHON),$(BIN)/python) -m pytest -m "gpu or trt" -rs

# One command for a lent, offline GPU machine (no network, no venv, no TensorRT): the machine's
# $(PYTHON) runs bench/device_check, which builds the plugins for sm_90 and the GPU's architecture,
# checks the kernel against torchvision, runs compute-sanitizer and ncu, times it, runs the network and
# the torch backend on CUDA and the GPU tests, in at most 8 minutes; summary.md, figures.json and logs go
# to $$OUT, else build/device-check. ARGS pass through (e.g. ARGS="--only build,kernel").
device-check:
	$(PYTHON) bench/device_check $(if $(NVCC),--nvcc $(NVCC)) $(ARGS)

# CI: the same script with --cpu-standin in .venv (its references need torch): the host build stands in
# for the kernel, every GPU step is reported skipped with its reason, the references run on the CPU.
device-check-standin: $(STAMP)
	$(BIN)/python bench/device_check --cpu-standin $(if $(NVCC),--nvcc $(NVCC)) $(ARGS)

# Builds what this machine can into build/plugins and says what it skipped and why; prints ptxas'
# registers, shared memory and spills per kernel and GPU architecture (and fails on a spill).
plugins:
	@mkdir -p $(PLUGIN_BUILD)
	@cmake -S trt_plugins -B $(PLUGIN_BUILD) $(if $(NVCC),-DCMAKE_CUDA_COMPILER=$(NVCC)) \
		$(if $(TENSORRT_INCLUDE_DIR),-DTENSORRT_INCLUDE_DIR=$(abspath $(TENSORRT_INCLUDE_DIR))) > $(PLUGIN_BUILD)/configure.log \
		|| { cat $(PLUGIN_BUILD)/configure.log; exit 1; }
	@cmake --build $(PLUGIN_BUILD) -j 2 > $(PLUGIN_BUILD)/build.log 2>&1 || { cat $(PLUGIN_BUILD)/build.log; exit 1; }
	@if grep -q "Compiling entry function" $(PLUGIN_BUILD)/build.log; then cp $(PLUGIN_BUILD)/build.log $(PLUGIN_BUILD)/ptxas.log; fi
	@touch $(PLUGIN_BUILD)/ptxas.log
	@python3 trt_plugins/build_report.py $(PLUGIN_BUILD)/configure.log $(PLUGIN_BUILD)/ptxas.log

# nvcc, the CUDA runtime headers and CCCL from PyPI (nvidia-cuda-nvcc, nvidia-cuda-cccl), for machines
# without a CUDA toolkit; CMake wants the unversioned libcudart.so beside the wheel's libcudart.so.13.
cuda-toolchain:
	test -x $(CUDA_TOOLCHAIN)/bin/python || python3 -m venv $(CUDA_TOOLCHAIN)
	$(CUDA_TOOLCHAIN)/bin/pip install --quiet 'nvidia-cuda-nvcc>=13' 'nvidia-cuda-cccl>=13'
	cd $(CUDA_TOOLCHAIN)/lib/python*/site-packages/nvidia/cu13/lib && ln -sf libcudart.so.13 libcudart.so
	@echo "cuda-toolchain: $$(ls $(CUDA_TOOLCHAIN)/lib/python*/site-packages/nvidia/cu13/bin/nvcc)"

# CI: the TensorRT glue compiled against every header set in ../shared/third_party (10.x and 11.x):
# libvfnet_trt_plugins.so, and the autoregister source (its library only where a libnvinfer is found).
# Without any nvcc it installs the PyPI toolchain first (and `make plugins` then uses it too).
plugins-check:
	@if [ -z "$(NVCC)" ]; then echo "plugins-check: no nvcc here; installing it from PyPI"; $(MAKE) --no-print-directory cuda-toolchain \
		&& $(MAKE) --no-print-directory plugins-check NVCC="$$(ls $(abspath $(CUDA_TOOLCHAIN))/lib/python*/site-packages/nvidia/cu13/bin/nvcc)"; exit $$?; fi
	@test -z "$(NVCC)" || test "$$(ls -d $(THIRD_PARTY)/tensorrt-*/include 2>/dev/null | wc -l)" -ge 2 || { echo "plugins-check: want two TensorRT header sets in $(THIRD_PARTY)/tensorrt-*/include"; exit 1; }
	@if [ -z "$(NVCC)" ]; then exit 0; fi; for headers in $(THIRD_PARTY)/tensorrt-*/include; do \
		name=$$(basename $$(dirname $$headers)); out=build/plugins-check/$$name; mkdir -p $$out; \
		cmake -S trt_plugins -B $$out -DCMAKE_CUDA_COMPILER=$(NVCC) -DTENSORRT_INCLUDE_DIR=$$headers \
			-DCMAKE_CUDA_ARCHITECTURES=75-real > $$out/configure.log || { cat $$out/configure.log; exit 1; }; \
		cmake --build $$out -j 2 --target vfnet_trt_targets > $$out/build.log 2>&1 \
			|| { cat $$out/build.log; exit 1; }; \
		echo "plugins-check: the TensorRT plugin library and the autoregister source compile against $$name (-Wall -Wextra -Werror)"; \
		sed -n 's/^-- vfnet: \(.*autoregister.*\)/plugins-check:   \1/p' $$out/configure.log; \
	done

# The deployment files (docker/, compose.yaml). Their tools (docker/tools.txt) live in a venv of
# their own, cached per machine.
DEPLOY_TOOLS ?= $(HOME)/.cache/vfnet-serve/deploy-tools
DEPLOY_STAMP := $(DEPLOY_TOOLS)/.installed-$(firstword $(shell cksum docker/tools.txt))

$(DEPLOY_STAMP): docker/tools.txt
	test -x $(DEPLOY_TOOLS)/bin/python || $(PYTHON) -m venv $(DEPLOY_TOOLS)
	$(DEPLOY_TOOLS)/bin/pip install --quiet -r docker/tools.txt
	touch $@

# Offline checks: hadolint on both Dockerfiles, compose.yaml against the compose spec, and the
# Kubernetes manifests with kubernetes-validate --strict, as kustomize renders them (without
# kubectl, file by file; the KServe InferenceService is a CRD: only warned about).
# promtool (Prometheus' rule checker and rule unit tester) from Debian's prometheus package, unpacked
# here, never installed or started: apt-get download into a temporary folder, then a rename.
PROMTOOL := $(DEPLOY_TOOLS)/prometheus/usr/bin/promtool
$(PROMTOOL):
	rm -rf $(DEPLOY_TOOLS)/prometheus.part && mkdir -p $(DEPLOY_TOOLS)/prometheus.part
	cd $(DEPLOY_TOOLS)/prometheus.part && { apt-get download -qq prometheus || { apt-get update -qq && apt-get download -qq prometheus; }; } \
		&& dpkg -x prometheus_*.deb . && rm prometheus_*.deb
	rm -rf $(DEPLOY_TOOLS)/prometheus && mv $(DEPLOY_TOOLS)/prometheus.part $(DEPLOY_TOOLS)/prometheus

docker-lint: $(DEPLOY_STAMP) $(PROMTOOL)
	$(DEPLOY_TOOLS)/bin/hadolint docker/Dockerfile.cpu docker/Dockerfile.gpu
	$(DEPLOY_TOOLS)/bin/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml
	@mkdir -p build
	@if command -v kubectl > /dev/null; then kubectl kustomize docker/k8s > build/k8s.yaml \
		&& $(DEPLOY_TOOLS)/bin/kubernetes-validate --strict --quiet build/k8s.yaml && echo "docker-lint: docker/k8s renders and validates"; \
	else echo "docker-lint: no kubectl here, so the kustomization is not rendered; validating its files one by one"; \
		$(DEPLOY_TOOLS)/bin/kubernetes-validate --strict --quiet $$(ls docker/k8s/*.yaml | grep -v kustomization); fi
	$(DEPLOY_TOOLS)/bin/kubernetes-validate --strict docker/k8s/kserve/inferenceservice.yaml
	$(PROMTOOL) check config --syntax-only docker/monitoring/prometheus.yml
	$(PROMTOOL) check rules docker/monitoring/rules/*.yml
	cd tests/docker && $(PROMTOOL) test rules vfnet-quality.promtest.yml

# The CPU image for real under podman (docker/podman/prepare.sh installs podman, buildah and runc
# where missing and makes the base images, cached per machine): build docker/Dockerfile.cpu, run it,
# probe it, SIGTERM it during requests, and compose.yaml's CPU service with podman-compose.
docker-smoke: $(STAMP) $(DEPLOY_STAMP)
	eval "$$(docker/podman/prepare.sh)" && PATH="$(DEPLOY_TOOLS)/bin:$$PATH" $(BIN)/python -m pytest -m container tests/docker -s

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
