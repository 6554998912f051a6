"""The openvino backend: what it refuses and how it says so, the precision it picks, and life
without torch. Served through the app: tests/server/app/test_openvino_service.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ov = pytest.importorskip("openvino")

from vfnet.server.runtime import ModelLoadError, load_detector  # noqa: E402
from vfnet.server.runtime.artifact import OPENVINO_CARD_KEY as CARD_KEY  # noqa: E402
from vfnet.server.runtime.backends.openvino_backend import native_bf16  # noqa: E402

NATIVE_BF16 = native_bf16(ov.Core())


def foreign_ir(folder, card: dict[str, str] | None = None):
    """A small IR that is not ours: x [1, 4] -> relu(x); with `card`, our card in its rt_info."""
    from openvino import opset13 as ops

    x = ops.parameter([1, 4], np.float32, name="x")
    model = ov.Model([ops.relu(x)], [x], "someone_elses")
    for key, value in (card or {}).items():
        model.set_rt_info(value, [CARD_KEY, key])
    path = folder / "model.xml"
    ov.save_model(model, str(path))
    return path


def test_a_foreign_ir_is_refused_as_not_ours(tmp_path):
    with pytest.raises(ModelLoadError, match=r"not exported by vfnet-serve \(no format=vfnet-serve metadata\)"):
        load_detector(foreign_ir(tmp_path))


def test_an_ir_with_our_card_but_other_tensors_is_refused(tmp_path, demo_ir):
    card = {key: str(value) for key, value in ov.Core().read_model(str(demo_ir)).get_rt_info([CARD_KEY]).value.items()}
    with pytest.raises(ModelLoadError, match=r"inputs \['x'\] and outputs .* expected \['images', 'image_sizes', 'iou_threshold'\]"):
        load_detector(foreign_ir(tmp_path, card))


def test_a_missing_bin_a_broken_xml_and_other_files_are_clear_errors(tmp_path, demo_ir):
    alone = tmp_path / "alone" / "model.xml"
    alone.parent.mkdir()
    shutil.copy(demo_ir, alone)
    with pytest.raises(ModelLoadError, match=r"its weights model.bin are missing \(an OpenVINO IR is two files"):
        load_detector(alone)
    broken = tmp_path / "broken" / "model.xml"
    broken.parent.mkdir()
    broken.write_text(demo_ir.read_text()[:5000])  # cut off mid-way
    shutil.copy(demo_ir.with_suffix(".bin"), broken.with_suffix(".bin"))
    with pytest.raises(ModelLoadError, match="OpenVINO cannot read it as an IR"):
        load_detector(broken)
    from vfnet.server.runtime.load import DEMO_ONNX

    with pytest.raises(ModelLoadError, match=r"serves an OpenVINO IR \(.xml \+ .bin\); make one with `vfnet export openvino`"):
        load_detector(DEMO_ONNX, backend="openvino")
    with pytest.raises(ModelLoadError, match="runs on the CPU"):
        load_detector(demo_ir, device="cuda")
    with pytest.raises(ModelLoadError, match="unknown precision 'int4'"):
        load_detector(demo_ir, precision="int4")
    with pytest.raises(ModelLoadError, match="precision fp32 applies to the openvino backend"):
        load_detector(DEMO_ONNX, precision="fp32")


@pytest.mark.skipif(NATIVE_BF16, reason="this CPU computes bfloat16 natively; the refusal is for CPUs without it")
def test_bf16_on_a_cpu_without_it_is_refused_and_auto_runs_fp32(demo_ir):
    with pytest.raises(ModelLoadError, match=r"precision bf16 asked for, but this CPU \(.*\) has no native bfloat16; use fp32 or auto"):
        load_detector(demo_ir, precision="bf16")
    assert load_detector(demo_ir).loaded.precision == "fp32"


@pytest.mark.skipif(not NATIVE_BF16, reason="needs a CPU with AVX512_BF16 or AMX (OpenVINO lists BF16)")
def test_auto_runs_bf16_where_the_cpu_has_it_and_finds_what_fp32_finds(demo_ir):
    """bfloat16 keeps 8 bits of mantissa, about int8's error: the criterion of the int8 test
    (test_int8_export.py): each float32 detection above 0.3 has a same-class bf16 detection at
    IoU >= 0.5 (bf16 thresholded lower, since a score near 0.3 may cross it)."""
    torch = pytest.importorskip("torch")
    from torchvision.ops import box_iou

    from vfnet.train.synth import render_image

    bf16, fp32 = load_detector(demo_ir), load_detector(demo_ir, precision="fp32")
    assert bf16.loaded.precision == "bf16" and fp32.loaded.precision == "fp32"
    images = [render_image(np.random.default_rng([77, i]), 384, 512, min_side=48, max_objects=5)[0] for i in range(8)]
    compared, lost = 0, []
    for index, (a, b) in enumerate(zip(fp32.detect(images, score_threshold=0.3), bf16.detect(images, score_threshold=0.2))):
        for box, label in zip(a.boxes, a.labels):
            same = b.boxes[b.labels == label]
            best = box_iou(torch.from_numpy(box[None]), torch.from_numpy(same)).max().item() if len(same) else 0.0
            compared += 1
            if best < 0.5:
                lost.append(f"image {index}: class {label} {box.round(1)} (best bf16 IoU {best:.2f})")
    assert compared >= 10 and lost == [], "\n".join(lost)


def test_vfnet_serve_refuses_a_precision_it_cannot_run_before_listening(demo_ir):
    from vfnet.server.runtime.load import DEMO_ONNX

    serve = [sys.executable, "-m", "vfnet.server.cli", "serve", "--port", "0"]
    done = subprocess.run([*serve, "--model", str(DEMO_ONNX), "--precision", "bf16"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "precision bf16 applies to the openvino backend" in done.stderr and "Traceback" not in done.stderr
    if not NATIVE_BF16:
        done = subprocess.run([*serve, "--model", str(demo_ir), "--precision", "bf16"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and "has no native bfloat16" in done.stderr and "Traceback" not in done.stderr


def test_the_backend_serves_without_torch(demo_ir):
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        import numpy as np
        from vfnet.server.runtime import load_detector
        detector = load_detector({str(demo_ir)!r})
        image = np.zeros((240, 320, 3), np.uint8); image[60:180, 80:240] = (230, 40, 40)
        [result] = detector.detect([image], score_threshold=0.05)
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
        print(detector.loaded.backend, result.width, result.height, len(result))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    backend, width, height, count = done.stdout.split()
    assert backend == "openvino" and (int(width), int(height)) == (320, 240) and int(count) > 0
