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
    config = TrainConfig(
        data=str(data), out=str(tmp_path / "run"), epochs=1, batch_size=2, warmup_iters=2, checkpoint_every=1,
        model_overrides={"box_refinement": False},  # an ablation variant: the checkpoint must say so
    )  # fmt: skip
    first = train(config, show_progress=False)
    state = torch.load(tmp_path / "run/last.pt", weights_only=True)
    assert (state["epoch"], state["iteration"]) == (1, 2) and state["seconds"] > 0

    longer = TrainConfig(**{**config.__dict__, "epochs": 2})
    final = train(longer, show_progress=False)  # resumes from last.pt: epoch 2 only
    meta = read_checkpoint_metadata(final)
    assert meta["training_iterations"] == "4" and json.loads(meta["training"])["epochs"] == 2
    assert float(meta["training_seconds"]) > state["seconds"]  # the first epoch's time is carried over
    model = load_checkpoint(final)
    assert model.class_names[:2] == ("circle", "triangle") and model.preset == "vfnet_r18_demo"
    assert not model.config.box_refinement and model.bbox_head.vfnet_reg_refine is None
    assert first == final


def test_train_cli_turns_set_into_model_overrides(tmp_path, monkeypatch, capsys):
    from vfnet.train import cli, trainer

    seen = {}
    monkeypatch.setattr(trainer, "train", lambda config, resume: seen.setdefault("config", config) and tmp_path / "final.safetensors")
    argv = ["--data", "d", "--out", "o", "--set", "star_dcn=false", "--set", "input_size=[320,320]", "--cls-loss", "focal"]
    assert cli.train_main(argv) == 0
    assert seen["config"].model_overrides == {"star_dcn": False, "input_size": (320, 320)}
    assert seen["config"].cls_loss == "focal"

    with pytest.raises(SystemExit):
        cli.train_main(["--data", "d", "--out", "o", "--set", "star_dcn=maybe"])
    assert "'star_dcn=maybe' is not FIELD=VALUE with a JSON value" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.train_main(["--data", "d", "--out", "o", "--set", "stars=1"])
    assert "unknown VFNet setting(s): stars" in capsys.readouterr().err


def test_init_backbone_starts_from_a_checkpoint_and_stays_frozen(tmp_path, tiny_checkpoint):
    """The ablation's shared start: the backbone (weights and BatchNorm statistics) comes from a
    checkpoint, frozen with frozen_stages=4 and norm_eval; the neck and head train from random."""
    data = generate(tmp_path / "data", images=2, seed=4, size=96).parent
    overrides = {"frozen_stages": 4, "norm_eval": True}
    config = TrainConfig(
        data=str(data), out=str(tmp_path / "run"), epochs=1, batch_size=2, warmup_iters=1,
        model_overrides=overrides, init_backbone=str(tiny_checkpoint),
    )  # fmt: skip
    trained = load_checkpoint(train(config, show_progress=False))
    source = load_checkpoint(tiny_checkpoint)
    for name, tensor in source.backbone.state_dict().items():
        # final.safetensors stores float16: equal to the source's weights up to that rounding
        torch.testing.assert_close(trained.backbone.state_dict()[name].float(), tensor.float().half().float(), msg=name)
    neck, source_neck = trained.neck.state_dict(), source.neck.state_dict()
    assert any(not torch.equal(neck[k], source_neck[k]) for k in neck)  # the neck did not come from the file


def test_init_backbone_refuses_a_backbone_of_another_depth(tmp_path, tiny_checkpoint):
    from vfnet.model import CheckpointError, build_vfnet
    from vfnet.train.trainer import init_backbone

    model = build_vfnet("vfnet_r18_demo", depth=34)
    with pytest.raises(CheckpointError, match="its backbone .* depth 18.* does not fit this model's \\(depth 34\\)"):
        init_backbone(model, str(tiny_checkpoint))
