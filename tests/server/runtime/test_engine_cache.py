"""Engine files without TensorRT: the profile defaults, the manifest's cache key, the sidecar, and
the cache's atomic writes and lock (two processes, one build)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest

from vfnet.server.runtime import ModelCard, ModelLoadError
from vfnet.server.runtime.artifact import sidecar_path, write_atomically
from vfnet.server.runtime.backends.tensorrt.cache import (
    EngineCache,
    Manifest,
    Profile,
    default_profile,
    mismatches,
    read_sidecar,
    runtime_mismatches,
    timing_cache_path,
)

CARD = ModelCard(
    preset="vfnet_r50_fpn", class_names=("person", "car"), precision="fp16", input_size=(1333, 800), size_divisor=32,
    max_detections=100, score_threshold=0.05, iou_threshold=0.6, pixel_mean=(123.675, 116.28, 103.53),
    pixel_std=(58.395, 57.12, 57.375), version="0.1.0",
)  # fmt: skip
MANIFEST = Manifest(
    tensorrt_version="11.1.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="sm_90", onnx_sha256="a" * 64,
    plugin_sha256="b" * 64, precision="fp16", profile=default_profile(CARD), builder_optimization_level=3,
    workspace_bytes=1 << 30,
)  # fmt: skip


def test_the_default_profile_covers_every_batch_size_and_both_orientations():
    profile = default_profile(CARD, max_batch_size=8)
    assert profile.shapes() == {"min": (1, 3, 32, 32), "opt": (8, 3, 800, 1344), "max": (8, 3, 1344, 1344)}
    demo = dataclasses.replace(CARD, input_size=(512, 512))
    assert default_profile(demo, max_batch_size=4).shapes()["opt"] == (4, 3, 512, 512)
    with pytest.raises(ValueError, match="batch profile must satisfy 1 <= min <= opt <= max, got 2, 1, 4"):
        Profile(2, 1, 4, (32, 32), (64, 64), (64, 64))
    with pytest.raises(ValueError, match="canvas width profile"):
        Profile(1, 1, 1, (32, 64), (64, 32), (64, 64))


@pytest.mark.parametrize(
    "change",
    [
        dict(tensorrt_version="10.16.0"),
        dict(gpu_name="NVIDIA A100-SXM4-80GB"),
        dict(compute_capability="sm_80"),
        dict(onnx_sha256="c" * 64),
        dict(plugin_sha256=""),
        dict(precision="fp32"),
        dict(profile=default_profile(CARD, max_batch_size=4)),
        dict(builder_optimization_level=5),
        dict(workspace_bytes=1 << 31),
    ],
)
def test_every_input_of_the_build_changes_the_key(change):
    assert dataclasses.replace(MANIFEST, **change).key() != MANIFEST.key()


def test_what_the_build_produced_does_not_change_the_key():
    assert dataclasses.replace(MANIFEST, engine_sha256="d" * 64, build_seconds=312.5).key() == MANIFEST.key()
    assert Manifest.from_dict(json.loads(json.dumps(MANIFEST.to_dict())), "m.json").key() == MANIFEST.key()  # survives JSON


def test_mismatches_name_each_difference():
    here = dataclasses.replace(MANIFEST, tensorrt_version="10.16.0", compute_capability="sm_80")
    assert mismatches(MANIFEST, here) == [
        "tensorrt_version: the engine has '11.1.0', here '10.16.0'",
        "compute_capability: the engine has 'sm_90', here 'sm_80'",
    ]


def test_an_engine_from_another_tensorrt_gpu_generation_or_plugin_library_is_refused_with_each_reason():
    assert runtime_mismatches(MANIFEST, "11.1.0", "sm_90", "b" * 64) == []
    assert runtime_mismatches(MANIFEST, "10.16.0", "sm_89", "c" * 64) == [
        "TensorRT: the engine was built for 11.1.0, this process has 10.16.0",
        "compute capability: the engine was built for sm_90, this process has sm_89",
        f"plugin library sha256: the engine was built for {'b' * 16}, this process has {'c' * 16}",
    ]
    without_plugin = dataclasses.replace(MANIFEST, plugin_sha256="")
    assert runtime_mismatches(without_plugin, "11.1.0", "sm_90") == []


def test_the_timing_cache_is_one_file_per_tensorrt_and_gpu_generation(tmp_path):
    names = {timing_cache_path(tmp_path, trt, cc).name for trt in ("10.16.0", "11.1.0") for cc in ("sm_89", "sm_90")}
    assert len(names) == 4 and "timing-trt11.1.0-sm_90.cache" in names


def test_an_atomic_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "timing.cache"
    path.write_bytes(b"old")
    write_atomically(path, b"new contents")
    assert path.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["timing.cache"]


def fake_build(text: bytes):
    def build(path):
        path.write_bytes(text)

    return build


def test_the_cache_builds_once_then_reuses_and_rebuilds_what_is_stale_or_damaged(tmp_path):
    cache = EngineCache(tmp_path)
    engine, built = cache.get_or_build("demo", CARD, MANIFEST, fake_build(b"engine-1"))
    assert built and engine.read_bytes() == b"engine-1"
    card, stored = read_sidecar(engine)
    assert card == CARD and stored.key() == MANIFEST.key() and len(stored.engine_sha256) == 64
    assert cache.get_or_build("demo", CARD, MANIFEST, fake_build(b"never")) == (engine, False)
    other, built = cache.get_or_build("demo", CARD, dataclasses.replace(MANIFEST, precision="fp32"), fake_build(b"engine-2"))
    assert built and other != engine and engine.read_bytes() == b"engine-1"  # another key, another file
    engine.write_bytes(b"engine-")  # cut short: its hash no longer matches the manifest
    again, built = cache.get_or_build("demo", CARD, MANIFEST, fake_build(b"engine-3"))
    assert (again, built) == (engine, True) and engine.read_bytes() == b"engine-3"
    sidecar_path(engine).write_text('{"format": "something else"}')
    assert cache.get_or_build("demo", CARD, MANIFEST, fake_build(b"engine-4"))[1]
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    def broken(path):
        path.write_bytes(b"half")
        raise RuntimeError("builder ran out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        EngineCache(tmp_path).get_or_build("demo", CARD, MANIFEST, broken)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_two_processes_build_one_engine(tmp_path):
    """Both ask at once; the second waits on the lock and reuses the first one's engine."""
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from pathlib import Path
        from vfnet.server.runtime.backends.tensorrt.cache import EngineCache, Manifest
        from vfnet.server.runtime import ModelCard
        card = ModelCard.from_metadata(json.loads(sys.argv[1]), "card")
        manifest = Manifest.from_dict(json.loads(sys.argv[2]), "manifest")
        folder = Path({str(tmp_path)!r})
        (folder / ("ready-" + sys.argv[3])).touch()
        while len(list(folder.glob("ready-*"))) < 2:  # start together
            time.sleep(0.01)

        def build(path):
            with (folder / "builds.log").open("a") as log:
                log.write(sys.argv[3] + "\\n")
            time.sleep(1.0)
            path.write_bytes(b"engine")

        engine, built = EngineCache(folder / "cache").get_or_build("demo", card, manifest, build)
        print(engine.name, built)
        """
    )
    arguments = [json.dumps(CARD.to_metadata()), json.dumps(MANIFEST.to_dict())]
    workers = [subprocess.Popen([sys.executable, "-c", script, *arguments, str(i)], stdout=subprocess.PIPE, text=True) for i in range(2)]
    answers = [worker.communicate(timeout=60)[0].split() for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    assert len((tmp_path / "builds.log").read_text().split()) == 1  # one build
    assert answers[0][0] == answers[1][0] and sorted(a[1] for a in answers) == ["False", "True"]


def test_reading_a_missing_or_foreign_sidecar_says_what_is_wrong(tmp_path):
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"?")
    with pytest.raises(ModelLoadError, match=r"no manifest x.engine.json beside it .*vfnet export trt"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="not a vfnet-serve engine manifest"):
        read_sidecar(engine)
