"""The steps that run the detector: network (vfnet_r50_fpn with random weights and the demo model, our
kernel in the star convolutions against the torchvision path) and backend (the torch backend on CUDA,
end to end on held-out images, against CPU torch and ONNX Runtime (CPU) on the committed demo ONNX)."""

from __future__ import annotations

import sys
import time

from .detections import describe_matches, detections_of, match_detections
from .kernels import GPU_DEVICE, HostKernel, cuda_kernels, relative_error
from .machine import need_torch, optional_import
from .report import Report, SkipStep

NETWORK_RAW_BOUND = 1e-4  # the head's outputs, our kernel against torchvision's, float32


def step_network(context: dict, report: Report) -> None:
    gpu = context["mode"] == "gpu"
    torch = need_torch()
    from vfnet.model import build_vfnet, load_checkpoint
    from vfnet.server.runtime.load import DEMO_CHECKPOINT

    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        kernels, device, r50_sizes, demo_count = cuda_kernels(), GPU_DEVICE, [(800, 1333), (800, 1200)], 4
    else:
        kernels, device, r50_sizes, demo_count = [HostKernel()], "cpu", [(160, 250)], 2  # the host build: fast
        report.skip("float16 networks", "--cpu-standin: reported on the GPU only (CPU time)")
    torch.manual_seed(0)
    model = build_vfnet("vfnet_r50_fpn")
    torch.nn.init.zeros_(model.bbox_head.vfnet_cls.bias)  # IACS near 0.5: plenty of detections to compare
    images, sizes = synthetic_batch(r50_sizes, 9100, device)
    report.info("vfnet_r50_fpn", f"random weights (seed 0, classification bias 0), images {r50_sizes} on a {tuple(images.shape[2:])} canvas")
    compare_network(report, "vfnet_r50_fpn", model.to(device), images, sizes, kernels, half=gpu)
    del model
    demo = load_checkpoint(DEMO_CHECKPOINT, map_location=device)
    images, sizes = synthetic_batch([(384, 512)] * demo_count, 8800, device)
    compare_network(report, "demo vfnet_r18_demo", demo, images, sizes, kernels, half=gpu)


def synthetic_batch(sizes, seed: int, device: str):
    """uint8 [B, 3, H, W] of synthetic scenes (vfnet.train.synth) zero-padded to multiples of 32, and image_sizes."""
    import numpy as np
    import torch

    from vfnet.train.synth import render_image

    height, width = (-(-max(s[i] for s in sizes) // 32) * 32 for i in (0, 1))
    images = np.zeros((len(sizes), 3, height, width), np.uint8)
    for index, (h, w) in enumerate(sizes):
        images[index, :, :h, :w] = render_image(np.random.default_rng([seed, index]), h, w)[0].transpose(2, 0, 1)
    return torch.from_numpy(images).to(device), torch.tensor(sizes, dtype=torch.int64, device=device)


def compare_network(report: Report, label: str, model, images, image_sizes, kernels, half: bool) -> None:
    """Detections and head outputs with our kernel in the star convolutions against torchvision's path."""
    import torch

    def run():
        detections = model(images, image_sizes)
        raw = model.raw_outputs(model.normalize(images, image_sizes))
        return detections, raw

    def per_image(detections):
        boxes, scores, labels, count = (t.float().cpu().numpy() if i < 2 else t.cpu().numpy() for i, t in enumerate(detections))
        return [(boxes[b, : count[b]], scores[b, : count[b]], labels[b, : count[b]]) for b in range(len(count))]

    with torch.inference_mode():
        for dtype in ("float32", "float16") if half else ("float32",):
            if dtype == "float16":
                model.half()
            reference, reference_raw = run()
            for kernel in kernels:
                if dtype not in kernel.dtypes:
                    continue
                replaced = use_kernel_in_star_convs(model, kernel)
                try:
                    got, got_raw = run()
                finally:
                    restore_star_convs(model)
                raw_error = max(
                    relative_error(getattr(a, field).float(), getattr(b, field).float())
                    for a, b in zip(got_raw, reference_raw)
                    for field in ("cls_logits", "bbox_refine")
                )
                cuts = (model.config.score_threshold, model.config.max_detections)
                matches = [match_detections(g, w, *cuts) for g, w in zip(per_image(got), per_image(reference))]
                name = f"{label}, {dtype}, {kernel.name} ({replaced} star convolutions)"
                report.figures.setdefault("network", []).append(
                    {"model": label, "type": dtype, "path": kernel.name, "head_error": raw_error, "matches": matches}
                )
                if dtype == "float32":
                    report.check(
                        f"{name}: head outputs", replaced > 0 and raw_error <= NETWORK_RAW_BOUND, f"max error {raw_error:.2e} (bound {NETWORK_RAW_BOUND:.0e})"
                    )
                    report.check(f"{name}: detections", all(m["passed"] for m in matches), describe_matches(matches))
                else:
                    report.info(f"{name} (reported, not bounded)", f"head max error {raw_error:.2e}; {describe_matches(matches)}")
        model.float()


def use_kernel_in_star_convs(model, kernel) -> int:
    """Route the model's StarDeformConv2d modules through `kernel`; returns how many (undo: restore_star_convs)."""
    from vfnet.model.head import StarDeformConv2d

    def forward(module, x, bbox_init, stride):
        return kernel(x.contiguous(), bbox_init.float().contiguous(), module.weight.to(x.dtype).contiguous(), int(stride))

    modules = [m for m in model.modules() if isinstance(m, StarDeformConv2d)]
    for module in modules:
        module.forward = forward.__get__(module)  # an instance attribute: shadows the class's forward
    return len(modules)


def restore_star_convs(model) -> None:
    for module in model.modules():
        module.__dict__.pop("forward", None)


def step_backend(context: dict, report: Report) -> None:
    gpu = context["mode"] == "gpu"
    torch = need_torch()
    if optional_import("onnxruntime") is None:
        raise SkipStep(f"onnxruntime is not importable by {sys.executable}")
    import numpy as np

    from vfnet.server.runtime import load_detector
    from vfnet.server.runtime.load import DEMO_CHECKPOINT, DEMO_ONNX
    from vfnet.train.synth import render_image

    images = [render_image(np.random.default_rng([8800, i]), 384, 512)[0] for i in range(8 if gpu else 3)]  # held out: training used seeds 1 and 2
    started = time.monotonic()
    onnx_detector = load_detector(DEMO_ONNX, device="cpu")
    cuts = (onnx_detector.card.score_threshold, onnx_detector.card.max_detections)  # where a detection may fall off either side
    onnx = [detections_of(r) for r in onnx_detector.detect(images)]
    cpu = [detections_of(r) for r in load_detector(DEMO_CHECKPOINT, backend="torch", device="cpu").detect(images)]
    report.figures["cpu_seconds"] = round(time.monotonic() - started, 1)
    matches = [match_detections(a, b, *cuts) for a, b in zip(cpu, onnx)]
    report.check("CPU torch against ONNX Runtime (CPU) on the demo ONNX", all(m["passed"] for m in matches), describe_matches(matches))
    if not gpu:
        report.skip("the torch backend on CUDA", "--cpu-standin: no GPU")
        return
    detector = load_detector(DEMO_CHECKPOINT, backend="torch", device="cuda")
    report.check("the torch backend loads on CUDA", detector.loaded.device == "cuda", f"loaded {detector.loaded}")
    tf32 = {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32, "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    report.figures["tf32_as_served"] = tf32
    served = [detections_of(r) for r in detector.detect(images)]
    for label, reference in (("CPU torch", cpu), ("ONNX Runtime (CPU)", onnx)):
        matches = [match_detections(a, b, *cuts) for a, b in zip(served, reference)]
        report.figures[f"cuda_vs_{label}"] = matches
        report.check(f"CUDA torch backend (as served: {tf32}) against {label}", all(m["passed"] for m in matches), describe_matches(matches))
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    strict = [detections_of(r) for r in detector.detect(images)]
    matches = [match_detections(a, b, *cuts) for a, b in zip(strict, cpu)]
    report.info(
        "with TF32 off (attribution only)", f"against CPU torch: {'passes' if all(m['passed'] for m in matches) else 'fails'}: {describe_matches(matches)}"
    )
