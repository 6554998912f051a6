"""docker/Dockerfile.gpu built unchanged on a stand-in for NVIDIA's TensorRT image
(docker/podman/tensorrt-standin.Dockerfile: nvcc from PyPI, TensorRT 10 headers, a stub libnvinfer,
no GPU). This checks what can be checked of the GPU image here: its build stage compiles
the plugins (the TensorRT plugin library included) and installs our package, and the image holds
the plugins and no torch, runs as the non-root user and, lacking TensorRT and a GPU, refuses to
serve with one clear line and exit 1. Under `make docker-smoke` (marker `container`)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from .test_cpu_image import CA_BUNDLE, ROOT, USER_ID, podman

pytestmark = pytest.mark.container

STANDIN_FILE = ROOT / "docker" / "podman" / "tensorrt-standin.Dockerfile"
STANDIN = f"localhost/tensorrt-standin:{hashlib.sha256(STANDIN_FILE.read_bytes()).hexdigest()[:12]}"  # a changed file: a new image
IMAGE = "localhost/vfnet-serve:gpu-standin"
HEADERS = [ROOT.parent / "shared" / "third_party" / "tensorrt-10.16", Path("/work/shared/third_party/tensorrt-10.16")]
PLUGINS = {"libvfnet_star_deform_conv_host.so", "libvfnet_star_deform_conv_cuda.so", "libvfnet_trt_plugins.so", "libvfnet_trt_plugins_autoregister.so"}


def buildah(*args: str, cwd: Path = ROOT) -> None:
    secret = ["--secret", f"id=pip_ca,src={CA_BUNDLE}"] if CA_BUNDLE.is_file() else []
    done = subprocess.run(
        ["buildah", "bud", "--isolation", "chroot", "--network", "host", "--layers", "--format", "docker", *secret, *args],
        cwd=cwd, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("buildah") is None:
        pytest.skip("needs buildah prepared by docker/podman/prepare.sh: run `make docker-smoke`")
    headers = next((h for h in HEADERS if (h / "include" / "NvInfer.h").is_file()), None)
    if headers is None:
        pytest.skip("needs the TensorRT 10 headers of ../shared/third_party for the stand-in TensorRT image")
    if podman("image", "exists", STANDIN, check=False).returncode != 0:
        buildah("-t", STANDIN, "-f", str(STANDIN_FILE), str(headers))
    buildah("--build-arg", f"TENSORRT_IMAGE={STANDIN}", "-t", IMAGE, "-f", "docker/Dockerfile.gpu", ".")
    return IMAGE


def run(image: str, *command: str) -> subprocess.CompletedProcess:
    return podman("run", "--rm", "--network", "host", image, *command, check=False)


def test_the_build_stage_compiled_every_plugin_into_the_image(image):
    assert set(run(image, "ls", "/opt/vfnet/plugins").stdout.split()) == PLUGINS
    symbols = run(image, "python", "-c", "import ctypes; ctypes.CDLL('/opt/vfnet/plugins/libvfnet_star_deform_conv_host.so').vfnetStarDeformConvF32")
    assert symbols.returncode == 0, symbols.stderr


def test_the_image_has_the_runtime_without_torch_as_the_non_root_user(image):
    found = run(image, "python", "-c", "import importlib.util as u; print(*(n for n in ('torch', 'onnxruntime', 'cuda', 'vfnet.server') if u.find_spec(n)))")
    assert found.stdout.split() == ["onnxruntime", "cuda", "vfnet.server"]
    assert run(image, "id", "-u").stdout.strip() == str(USER_ID)
    env = podman("image", "inspect", image, "--format", "{{range .Config.Env}}{{println .}}{{end}}").stdout.split()
    assert {"VFNET_BACKEND=tensorrt", "VFNET_ENGINE_CACHE=/var/cache/vfnet", "VFNET_PLUGIN_DIR=/opt/vfnet/plugins"} <= set(env)


def test_without_tensorrt_and_a_gpu_it_refuses_to_serve_in_one_line(image):
    served = run(image)  # the default command: serve the demo with TensorRT
    assert served.returncode == 1
    lines = [line for line in served.stderr.splitlines() if "systemd" not in line]  # podman's own noise here
    assert lines == [line for line in lines if line.startswith("error: TensorRT is not installed here")] and len(lines) == 1
    assert run(image, "vfnet", "serve", "--help").returncode == 0
