"""The TensorRT builder's calls without TensorRT: a stand-in `tensorrt` module records what build.py
asks of TensorRT, to check the process's one logger (never a temporary one handed to
libnvinfer_plugin), TF32 cleared unless asked for, and a plugin library loaded only when its
creators are not registered yet. On a TensorRT host the real module runs the same code
(tests/server/runtime/test_tensorrt_backend.py)."""

from __future__ import annotations

import gc
import sys
import types
import weakref
from pathlib import Path

import pytest

from vfnet.server.runtime.backends.tensorrt import build
from vfnet.server.runtime.backends.tensorrt.cache import Manifest, Profile

PROFILE = Profile(1, 1, 2, (32, 32), (64, 64), (64, 64))


class FakeTensorRT(types.ModuleType):
    """The parts of the tensorrt module build.py uses, recording the calls."""

    def __init__(self, registered: tuple[str, ...] = ()):
        super().__init__("tensorrt")
        self.__version__ = "10.16.0"
        self.plugin_logger = None  # a weak reference to what init_libnvinfer_plugins was given
        self.loggers_used: list = []
        self.cleared: list = []
        self.registered, self.loaded = set(registered), []
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda logger, severity=2: None})
        self.BuilderFlag = types.SimpleNamespace(TF32="TF32")
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
        self.IProgressMonitor = type("IProgressMonitor", (), {"__init__": lambda monitor: None})

    def init_libnvinfer_plugins(self, logger, namespace):
        self.plugin_logger = weakref.ref(logger)  # libnvinfer_plugin keeps the pointer, not a reference
        return True

    def get_plugin_registry(self):
        fake = self

        class Registry:
            @property
            def all_creators(self):
                return [types.SimpleNamespace(name=n, plugin_version="1", plugin_namespace="") for n in fake.registered]

            def load_library(self, path):
                fake.loaded.append(path)
                return object()

        return Registry()

    def Builder(self, logger):  # noqa: N802 (TensorRT's name)
        self.loggers_used.append(logger)
        fake = self

        class Config:
            builder_optimization_level = 0
            progress_monitor = None

            def set_memory_pool_limit(self, pool, size):
                pass

            def clear_flag(self, flag):
                fake.cleared.append(flag)

            def add_optimization_profile(self, profile):
                pass

            def create_timing_cache(self, blob):
                return object()

            def set_timing_cache(self, cache, ignore_mismatch):
                return True

        class Profile_:
            def set_shape(self, name, low, mid, high):
                pass

        return types.SimpleNamespace(
            create_network=lambda flags: object(),
            create_builder_config=Config,
            create_optimization_profile=Profile_,
            build_serialized_network=lambda network, config: b"engine",
        )

    def OnnxParser(self, network, logger):  # noqa: N802
        self.loggers_used.append(logger)
        return types.SimpleNamespace(parse_from_file=lambda path: True, num_errors=0)


@pytest.fixture
def fake_tensorrt(monkeypatch):
    def install(registered: tuple[str, ...] = ()) -> FakeTensorRT:
        fake = FakeTensorRT(registered)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        for cached in (build.logger, build.register_tensorrt_plugins, build.load_plugin_library):
            cached.cache_clear()
        return fake

    yield install
    for cached in (build.logger, build.register_tensorrt_plugins, build.load_plugin_library):
        cached.cache_clear()


def test_one_process_wide_logger_outlives_everything_it_was_given_to(fake_tensorrt, tmp_path):
    fake = fake_tensorrt()
    build.build_engine(Path("m.onnx"), tmp_path / "a.engine", PROFILE, None, build.BuilderSettings(), lambda message: None)
    gc.collect()
    assert fake.plugin_logger is not None and fake.plugin_logger() is not None  # still alive after the call returned
    build.build_engine(Path("m.onnx"), tmp_path / "b.engine", PROFILE, None, build.BuilderSettings(), lambda message: None)
    assert {id(logger) for logger in fake.loggers_used} == {id(fake.plugin_logger())}  # one logger for everything


@pytest.mark.parametrize("tf32, cleared", [(False, ["TF32"]), (True, [])])
def test_fp32_engines_are_built_without_tf32_unless_asked(fake_tensorrt, tmp_path, tf32, cleared):
    fake = fake_tensorrt()
    build.build_engine(Path("m.onnx"), tmp_path / "m.engine", PROFILE, None, build.BuilderSettings(tf32=tf32), lambda message: None)
    assert fake.cleared == cleared and (tmp_path / "m.engine").read_bytes() == b"engine"


def test_a_plugin_library_is_loaded_only_when_its_creators_are_not_registered(fake_tensorrt):
    library = build.PluginLibrary(Path("/plugins/libvfnet_trt_plugins.so"), ("StarDeformConv",))
    fake = fake_tensorrt(registered=())
    build.load_plugin_library(library)
    assert fake.loaded == ["/plugins/libvfnet_trt_plugins.so"]
    fake = fake_tensorrt(registered=("StarDeformConv",))  # the register-at-load library came first
    build.load_plugin_library(library)
    assert fake.loaded == []


def test_an_old_manifest_without_tf32_reads_as_built_with_tensorrts_default():
    fields = dict(
        tensorrt_version="10.16.0", gpu_name="H100", compute_capability="sm_90", onnx_sha256="a", plugin_sha256="", precision="fp32",
        profile={"min_batch": 1, "opt_batch": 1, "max_batch": 2, "min_canvas": [32, 32], "opt_canvas": [64, 64], "max_canvas": [64, 64]},
        builder_optimization_level=3, workspace_bytes=1,
    )  # fmt: skip
    assert Manifest.from_dict(fields, "old.engine.json").tf32 is True
    assert Manifest.from_dict({**fields, "tf32": False}, "new.engine.json").tf32 is False
    assert Manifest.from_dict({**fields, "tf32": False}, "x").key() != Manifest.from_dict({**fields, "tf32": True}, "x").key()
