"""One command for a lent, offline GPU machine: `make device-check` (python3 bench/device_check).

Each step runs in a process of its own under a time box, inside one budget (8 minutes by default);
a failing step does not stop the others:

  environment  the GPU, the driver, the Python packages and the CUDA tools found
  build        trt_plugins with CMake for sm_90 plus the GPU's own architecture only; ptxas' registers,
               shared memory and spills per kernel; SASS instruction counts per architecture
               (cuobjdump); the kernel paths the C API exposes
  kernel       each kernel path against torchvision's CUDA deform_conv2d at the five VFNet level shapes
               (vfnet_r50_fpn at 800x1344, 256 channels; batch 1, and 8 at P3), float32 and float16;
               identities that need no reference; an empty batch; a non-default CUDA stream
  sanitizers   compute-sanitizer memcheck, racecheck, initcheck, synccheck on small cases
  profile      one ncu profile at P3: duration, achieved occupancy, pipe use, shared-memory bank conflicts
  timing       ours against torchvision with CUDA events: batch 1 and 8, float32 and float16, at P3
  network      vfnet_r50_fpn (random weights) and the demo model with our kernel in the star
               convolutions against the torchvision path
  backend      the torch backend on CUDA, end to end on held-out images, against CPU torch and ONNX
               Runtime (CPU) on the committed demo ONNX
  gpu-tests    pytest -m gpu on the test files that need neither TensorRT nor the HTTP service

    python3 bench/device_check [--cpu-standin] [--out DIR] [--budget SECONDS] [--only STEP,...] [--nvcc PATH]

It writes into --out, else $OUT, else build/device-check/: summary.md (the GPU, every step passed,
failed or skipped with its reason and figures), figures.json and the logs (steps.log, build.log,
sanitizers.log, ncu.log, pytest.log): 7 files. The exit code is 0 when every step that ran passed.

No network and no venv: it runs on the machine's own python3 (torch, torchvision, onnxruntime, numpy,
Pillow, OpenCV, pytest) and makes `vfnet` importable through PYTHONPATH onto build/pythonpath, a folder
of symlinks (vfnet/model -> model/, ...; `--pythonpath` makes it and prints its path).

--cpu-standin (`make device-check-standin`, in CI): the host build stands in for the kernel (for each
kernel path the host mirror of the CUDA kernels, vfnet.trt_plugins.star_deform_conv_tiled, float32 and
float16), every GPU step is reported skipped with its reason, and the references run on the CPU at small
shapes. The torchvision references need torch (the venv's python); with a python without torch the
stand-in runs the build and the identities that need no reference, and skips the rest.

The kernel paths are the C API's (trt_plugins/star_deform_conv/starDeformConvCuda.cpp), one per
algorithm of vfnet.trt_plugins.ALGORITHMS: "default", vfnetStarDeformConvCuda(type, ...), what the
TensorRT plugin runs; "cuda-cores" and "tensor-cores" (float16 only), vfnetStarDeformConvCudaWith(
algorithm, type, ...). Every path is checked, sanitised, profiled and timed.

The modules, in the order a run meets them:

  __main__.py         the entry point (python3 bench/device_check, python3 -m ...)
  run.py              the command line; the steps in order, each in a child process under its time box
                      and the budget; figures.json and summary.md
  report.py           what a step found (Report, SkipStep), and summary.md made of the steps' results
  pythonpath.py       build/pythonpath: `vfnet` importable without pip
  machine.py          this machine's tools and Python modules
  processes.py        a tool in a process group of its own, under a time limit, logged
  kernels.py          the kernel paths and how each is called (on torch tensors, or the host mirror
                      standing in), the shapes, the bounds, the torchvision reference
  steps_environment.py, steps_build.py, steps_kernel.py (kernel, timing), steps_tools.py (sanitizers,
  profile) with driver.py (what compute-sanitizer and ncu run), steps_model.py (network, backend,
  gpu-tests) with detections.py (matching two models' detections): the steps
"""

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
