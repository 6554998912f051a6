"""The training loop end to end on a tiny set: progress, checkpoints, resume, final metadata."""

from __future__ import annotations

import json

import pytest
import torch

from vfnet.model import load_checkpoint, read_checkpoint_metadata
from vfnet.train.synth import generate
from vfnet.train.trainer import TrainConfig, learning_rate, train


def test_learning_rate_schedule():
    config = TrainConfig(data="", out="", lr=0.01, warmup_iters=100, warmup_ratio=0.1, lr_steps=(8, 11))
    assert learning_rate(config, 0, 0) == pytest.approx(0.001)
    assert learning_rate(config, 50, 0) == pytest.approx(0.0055)
    assert learning_rate(config, 100, 0) == pytest.approx(0.01)
    assert learning_rate(config, 5000, 8) == pytest.approx(0.001)
    assert learning_rate(config, 9000, 11) == pytest.approx(0.0001)


def test_train_resume_and_final_checkpoint(tmp_path):
    data = generate(tmp_path / "data", images=4, seed=3, size=96).parent
    config = TrainConfig(data=str(data), out=str(tmp_path / "run"), epochs=1, batch_size=2, warmup_iters=2, checkpoint_every=1)
    first = train(config, show_progress=False)
    state = torch.load(tmp_path / "run/last.pt", weights_only=True)
    assert (state["epoch"], state["iteration"]) == (1, 2)

    longer = TrainConfig(**{**config.__dict__, "epochs": 2})
    final = train(longer, show_progress=False)  # resumes from last.pt: epoch 2 only
    meta = read_checkpoint_metadata(final)
    assert meta["training_iterations"] == "4" and json.loads(meta["training"])["epochs"] == 2
    model = load_checkpoint(final)
    assert model.class_names[:2] == ("circle", "triangle") and model.preset == "vfnet_r18_demo"
    assert first == final
