"""mmengine (mmdet 3.x) training checkpoints: read with inert stand-ins, weights exact, EMA on request,
and a `getattr`-borne payload refused without running.

The fixture pickles what mmengine pickles without mmengine installed: a fake `HistoryBuffer` lives in a
module registered as `mmengine.logging.history_buffer` only while saving; its `__getstate__` stores its
statistics methods, which protocol 2 writes as `builtins.getattr(HistoryBuffer, "min")`.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import pickle
import re
import sys
import types

import numpy as np
import pytest
import torch

from vfnet.export.convert_cli import main as convert_cli
from vfnet.model import CheckpointError, convert_mmdet, load_checkpoint
from vfnet.model.safe_pickle import InertAttribute, InertHistoryBuffer, safe_torch_load

_HISTORY_BUFFER_SOURCE = """
import numpy as np

SENTINEL = None  # a path; written if anything of this class ever runs while loading


class HistoryBuffer:
    def __init__(self, log_history=(), count_history=(), max_length=1000000):
        self._log_history = np.array(log_history)
        self._count_history = np.array(count_history)
        self._max_length = max_length
        self._statistics_methods = {"min": HistoryBuffer.min, "max": HistoryBuffer.max, "mean": HistoryBuffer.mean}

    def min(self, window_size=None):
        return self._log_history.min()

    def max(self, window_size=None):
        return self._log_history.max()

    def mean(self, window_size=None):
        return self._log_history.mean()

    def __getstate__(self):
        return {
            "_log_history": self._log_history,
            "_count_history": self._count_history,
            "_max_length": self._max_length,
            "_statistics_methods": self._statistics_methods,
        }

    def __setstate__(self, state):
        open(SENTINEL, "w").close()
"""


@contextlib.contextmanager
def _fake_mmengine(sentinel):
    names = ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer")
    assert not any(n in sys.modules for n in names), "mmengine must not be importable in these tests"
    modules = {n: types.ModuleType(n) for n in names}
    exec(_HISTORY_BUFFER_SOURCE, modules[names[-1]].__dict__)
    modules[names[-1]].SENTINEL = str(sentinel)
    sys.modules.update(modules)
    try:
        yield modules[names[-1]].HistoryBuffer
    finally:
        for n in names:  # the reader has no mmengine: nothing of the fake could run
            sys.modules.pop(n, None)


@pytest.fixture
def training_file(official_shapes, random_state, tmp_path):
    """Factory: an mmengine training checkpoint (zip or legacy) -> (path, raw state, ema state)."""

    def make(legacy: bool, with_ema: bool = True):
        shapes = official_shapes(num_classes=3)
        state, ema = random_state(shapes, seed=0), random_state(shapes, seed=1)
        with _fake_mmengine(tmp_path / "history_buffer_ran") as HistoryBuffer:
            checkpoint = {
                "meta": {
                    "epoch": 12,
                    "iter": 7330,
                    "cfg": "model = dict(type='VFNet')",
                    "seed": 42,
                    "experiment_name": "vfnet_r50_fpn_1x_coco_20240101_000000",
                    "time": "20240101_000000",
                    "mmengine_version": "0.10.4",
                    "dataset_meta": {"classes": ("cat", "dog", "fox"), "palette": [(220, 20, 60), (119, 11, 32), (0, 0, 142)]},
                },
                "state_dict": collections.OrderedDict(state),
                "message_hub": {
                    "log_scalars": collections.OrderedDict({"train/loss": HistoryBuffer([1.5, 1.25], [1, 1]), "train/lr": HistoryBuffer([0.01, 0.01], [1, 1])}),
                    "runtime_info": {
                        "epoch": 12,
                        "iter": 7330,
                        "max_iters": np.int64(7330),
                        "loss_scale": np.float64(512.0),
                        "grid": np.arange(6, dtype=np.float32).reshape(2, 3),
                    },
                    "resumed_keys": {"epoch": False, "iter": False},
                },
                "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": [{"lr": 0.01, "momentum": 0.9, "params": [0]}]},
                "param_schedulers": [
                    {"milestones": collections.Counter({8: 1, 11: 1}), "gamma": 0.1, "by_epoch": True, "base_values": [0.01], "last_step": 12}
                ],
            }
            if with_ema:
                checkpoint["ema_state_dict"] = collections.OrderedDict({"steps": torch.tensor(7330), **{f"module.{k}": v for k, v in ema.items()}})
            path = tmp_path / ("legacy.pth" if legacy else "zip.pth")
            torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
        assert b"getattr" in path.read_bytes() and b"mmengine.logging.history_buffer" in path.read_bytes()  # the real pickle's globals
        return path, state, ema

    return make


@pytest.mark.parametrize("legacy", [False, True])
def test_training_file_reads_as_inert_data(legacy, training_file, tmp_path):
    path, _, _ = training_file(legacy)

    checkpoint = safe_torch_load(path)

    assert not (tmp_path / "history_buffer_ran").exists()
    loss = checkpoint["message_hub"]["log_scalars"]["train/loss"]
    assert type(loss) is InertHistoryBuffer
    assert loss.state["_log_history"].value.tolist() == [1.5, 1.25] and loss.state["_max_length"] == 1000000
    methods = loss.state["_statistics_methods"]
    assert set(methods) == {"min", "max", "mean"} and all(isinstance(m, InertAttribute) for m in methods.values())
    assert methods["min"].name == "min" and not callable(methods["min"])
    runtime = checkpoint["message_hub"]["runtime_info"]
    assert runtime["max_iters"] == 7330 and runtime["max_iters"].dtype == np.int64 and runtime["loss_scale"] == 512.0
    assert runtime["grid"].value.tolist() == [[0, 1, 2], [3, 4, 5]] and runtime["grid"].value.dtype == np.float32
    assert checkpoint["param_schedulers"][0]["milestones"] == collections.Counter({8: 1, 11: 1})
    assert checkpoint["message_hub"]["resumed_keys"] == {"epoch": False, "iter": False}
    assert torch.equal(checkpoint["optimizer"]["state"][0]["momentum_buffer"], torch.zeros(3))


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("ema", [False, True])
def test_training_file_converts_with_exact_weights(legacy, ema, training_file, tmp_path):
    path, state, ema_state = training_file(legacy)
    dst = tmp_path / "out.safetensors"

    convert_mmdet(path, dst, ema=ema)

    model = load_checkpoint(dst)
    assert model.preset == "vfnet_r50_fpn" and model.class_names == ("cat", "dog", "fox")
    expected = ema_state if ema else state
    loaded = model.state_dict()
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())
    assert not (tmp_path / "history_buffer_ran").exists()


def test_cli_ema_flag_picks_ema_weights(training_file, tmp_path, capsys):
    path, state, ema_state = training_file(legacy=False)
    key = "bbox_head.vfnet_cls.weight"

    assert convert_cli([str(path), str(tmp_path / "plain.safetensors")]) == 0
    assert convert_cli([str(path), str(tmp_path / "ema.safetensors"), "--ema-state-dict"]) == 0

    assert torch.equal(load_checkpoint(tmp_path / "plain.safetensors").state_dict()[key], state[key])
    assert torch.equal(load_checkpoint(tmp_path / "ema.safetensors").state_dict()[key], ema_state[key])


def test_ema_without_ema_weights_is_a_clear_error(training_file, tmp_path, capsys):
    path, _, _ = training_file(legacy=True, with_ema=False)

    with pytest.raises(CheckpointError, match=r"--ema-state-dict: the file has no EMA weights \('ema_state_dict'\)"):
        convert_mmdet(path, tmp_path / "out.safetensors", ema=True)
    assert convert_cli([str(path), str(tmp_path / "o.safetensors"), "--ema-state-dict"]) == 1
    assert "no EMA weights" in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "o.safetensors").exists()


class _Payload:
    """Pickles as `getattr(<callable>, "__call__")(arg)`: protocol 2 writes a bound `__call__` via getattr."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func.__call__, (self.arg,))


def _payloads(marker):
    import os

    return {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "builtins.eval": _Payload(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
    }


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("name", ["os.system", "builtins.eval"])
def test_payload_behind_getattr_is_refused_not_run(name, legacy, tmp_path):
    armed = tmp_path / "armed"
    pickle.loads(pickle.dumps(_payloads(armed)[name], protocol=2))  # an ordinary unpickler does run it
    assert armed.exists()
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": {"hook_msgs": _payloads(marker)[name]}}, src, _use_new_zipfile_serialization=not legacy)
    assert b"getattr" in src.read_bytes()

    with pytest.raises(CheckpointError, match=rf"refused: it references .*{re.escape(name)}"):
        convert_mmdet(src, tmp_path / "out.safetensors")
    assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_getattr_on_anything_but_a_stand_in_is_refused(legacy, tmp_path):
    src = tmp_path / "evil.pth"
    payload = _Payload(collections.OrderedDict.fromkeys, ["a"])  # getattr(OrderedDict, "fromkeys"): allowed global, not ours
    torch.save({"state_dict": {}, "meta": payload}, src, _use_new_zipfile_serialization=not legacy)

    with pytest.raises(CheckpointError, match=r"refused: it calls builtins.getattr\(collections.OrderedDict, 'fromkeys'\)"):
        safe_torch_load(src)
