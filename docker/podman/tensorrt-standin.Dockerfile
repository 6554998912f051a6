# A stand-in for NVIDIA's TensorRT image (nvcr.io/nvidia/tensorrt, out of reach here), so that
# `make docker-smoke` can build docker/Dockerfile.gpu unchanged with
# --build-arg TENSORRT_IMAGE=localhost/tensorrt-standin. It has what that Dockerfile's build stage
# uses: python3 with pip, g++ and make, nvcc at /usr/local/cuda (NVIDIA's PyPI wheels) and the
# TensorRT headers (the build context: a TensorRT include folder's parent). It has no TensorRT
# libraries and no GPU: the image it gives compiles everything and refuses to serve, with one line.
FROM docker.io/library/python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends g++ make && apt-get clean && rm -rf /var/lib/apt/lists/*
RUN --mount=type=secret,id=pip_ca \
    if [ -f /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && python3 -m pip install --break-system-packages --no-cache-dir 'nvidia-cuda-nvcc>=13' 'nvidia-cuda-cccl>=13' \
    && cuda=$(python3 -c 'import nvidia.cu13; print(list(nvidia.cu13.__path__)[0])') \
    && ln -sf libcudart.so.13 "$cuda/lib/libcudart.so" \
    && ln -s "$cuda" /usr/local/cuda
COPY include/ /usr/include/x86_64-linux-gnu/
