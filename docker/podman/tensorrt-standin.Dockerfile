# A stand-in for NVIDIA's TensorRT image (nvcr.io/nvidia/tensorrt, out of reach here), so that
# `make docker-smoke` can build docker/Dockerfile.gpu unchanged with
# --build-arg TENSORRT_IMAGE=localhost/tensorrt-standin. It has what that Dockerfile's build stage
# uses: python3 with pip, g++ and make, nvcc at /usr/local/cuda (NVIDIA's PyPI wheels) and the
# TensorRT headers (the build context: a TensorRT include folder's parent). Of TensorRT's libraries
# it has only a stub libnvinfer.so.10 that defines getPluginRegistry (what the register-at-load
# plugin library links against, as it does against the real one in NVIDIA's image), and no GPU: the
# image it gives compiles everything and refuses to serve, with one line.
FROM docker.io/library/python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends g++ make && apt-get clean && rm -rf /var/lib/apt/lists/*
RUN --mount=type=secret,id=pip_ca \
    if [ -f /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && python3 -m pip install --break-system-packages --no-cache-dir 'nvidia-cuda-nvcc>=13' 'nvidia-cuda-cccl>=13' \
    && cuda=$(python3 -c 'import nvidia.cu13; print(list(nvidia.cu13.__path__)[0])') \
    && ln -sf libcudart.so.13 "$cuda/lib/libcudart.so" \
    && ln -s "$cuda" /usr/local/cuda
COPY include/ /usr/include/x86_64-linux-gnu/
RUN printf '%s\n' 'namespace nvinfer1 { class IPluginRegistry; }' \
        'extern "C" nvinfer1::IPluginRegistry* getPluginRegistry() noexcept { return nullptr; }' > /tmp/nvinfer_stub.cpp \
    && g++ -shared -fPIC -Wl,-soname,libnvinfer.so.10 -o /usr/lib/x86_64-linux-gnu/libnvinfer.so.10 /tmp/nvinfer_stub.cpp \
    && ln -s libnvinfer.so.10 /usr/lib/x86_64-linux-gnu/libnvinfer.so && rm /tmp/nvinfer_stub.cpp
