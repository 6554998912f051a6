"""The training loop: data -> augmentation -> ATSS -> losses -> SGD, with checkpoints and resume.

Schedule (mmdetection's 1x recipe, scaled): SGD with momentum 0.9 and weight decay 1e-4; biases
get twice the learning rate and no decay; linear warm-up from `warmup_ratio` over `warmup_iters`;
the learning rate drops 10x at each epoch in `lr_steps`. Augmentation: keep-ratio resize to the
model's input policy times a scale drawn from `scale_range`, horizontal flip with probability 0.5.

Files in `out/`: `last.pt` (resume state, written every `checkpoint_every` iterations and at each
epoch end; loaded with weights_only=True) and, at the end, `final.safetensors` (our checkpoint,
with class names, the training settings, the iterations and the training seconds summed over
resumes in its metadata).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vfnet.model import CheckpointError, VFNet, build_vfnet, load_checkpoint, save_checkpoint
from vfnet.model.boxes import level_points
from vfnet.server.coco import CocoDetection, Sample
from vfnet.server.runtime.images import pad_images

from .atss import atss_assign
from .augment import augment
from .losses import vfnet_losses


@dataclass(frozen=True)
class TrainConfig:
    data: str  # folder with annotations.json (COCO format) and the images
    out: str  # folder for last.pt and final.safetensors
    preset: str = "vfnet_r18_demo"
    model_overrides: dict = field(default_factory=dict)  # VFNetConfig fields, e.g. {"star_dcn": False} (the ablation)
    epochs: int = 12
    batch_size: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_ratio: float = 0.1
    lr_steps: tuple[int, ...] = (8, 11)  # epochs after which the learning rate drops 10x
    scale_range: tuple[float, float] = (0.6, 1.0)  # training sizes, relative to the model's input policy
    flip: float = 0.5
    cls_loss: str = "varifocal"  # or "focal" (the ablation's baseline)
    max_images: int = 0  # use only the first N training images (0: all)
    checkpoint_every: int = 200  # iterations
    seed: int = 0
    threads: int = 0  # torch threads (0: torch's default)
    bf16: bool = False  # bfloat16 autocast for the network (CPU or GPU); losses stay float32
    init_backbone: str = ""  # one of our checkpoints whose backbone starts this run (as ImageNet weights would)


def param_groups(model: VFNet, config: TrainConfig) -> list[dict]:
    """Biases: 2x learning rate, no weight decay (mmdetection's bias_lr_mult / bias_decay_mult)."""
    biases = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith(".bias")]
    others = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith(".bias")]
    return [
        {"params": others, "lr": config.lr, "weight_decay": config.weight_decay, "lr_mult": 1.0},
        {"params": biases, "lr": 2 * config.lr, "weight_decay": 0.0, "lr_mult": 2.0},
    ]


def init_backbone(model: VFNet, path: str) -> None:
    """Start `model`'s backbone from the backbone of the checkpoint at `path` (weights and BatchNorm
    statistics), the way detectors start from ImageNet weights; its neck and head stay random."""
    source = load_checkpoint(path)
    try:
        model.backbone.load_state_dict(source.backbone.state_dict())
    except RuntimeError:
        raise CheckpointError(
            f"{path}: its backbone (preset {source.preset!r}, depth {source.config.depth}) does not fit this model's (depth {model.config.depth})"
        ) from None


def learning_rate(config: TrainConfig, iteration: int, epoch: int) -> float:
    """Base learning rate at this point: linear warm-up, then 10x steps."""
    lr = config.lr * 0.1 ** sum(epoch >= step for step in config.lr_steps)
    if iteration < config.warmup_iters:
        lr *= config.warmup_ratio + (1 - config.warmup_ratio) * iteration / config.warmup_iters
    return lr


def training_step(model: VFNet, samples: list[Sample], cls_loss: str) -> dict[str, torch.Tensor]:
    """Forward a batch of augmented samples and return the losses (and their sum, `loss`): loss_cls,
    loss_bbox, and loss_bbox_rf or loss_centerness as the model's head has them (losses.py)."""
    images, image_sizes = pad_images([s.image for s in samples], model.config.size_divisor)
    x = model.normalize(torch.from_numpy(images), torch.from_numpy(image_sizes))
    levels = model.raw_outputs(x)
    strides = model.config.strides
    points = [level_points(lv[0].shape[-2], lv[0].shape[-1], s) for lv, s in zip(levels, strides)]
    labels, targets = zip(*[atss_assign(points, strides, torch.from_numpy(s.boxes), torch.from_numpy(s.labels), model.config.num_classes) for s in samples])

    def flatten(per_level: list[torch.Tensor]) -> torch.Tensor:
        # per level [B, ch, h, w] -> [B, h*w, ch]; concatenated over levels -> [B * P, ch]
        channels = per_level[0].shape[1]
        per_level = [t.permute(0, 2, 3, 1).reshape(len(samples), -1, channels) for t in per_level]
        return torch.cat(per_level, dim=1).reshape(-1, channels)

    config = model.config
    losses = vfnet_losses(
        flatten([lv.cls_logits for lv in levels]),
        flatten([lv.bbox_init for lv in levels]),
        flatten([lv.bbox_refine for lv in levels]) if config.box_refinement else None,
        torch.cat(points).repeat(len(samples), 1),
        torch.cat(labels),
        torch.cat(targets),
        cls_loss=cls_loss,
        centerness=flatten([lv.centerness for lv in levels])[:, 0] if config.centerness else None,  # [B * P]
    )
    losses["loss"] = sum(losses.values())
    return losses


def _save_state(path: Path, model, optimizer, epoch: int, iteration: int, config: TrainConfig, seconds: float) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "iteration": iteration,
            "config": json.dumps(dataclasses.asdict(config)),
            "seconds": seconds,  # training time so far, summed over resumes
        },
        tmp,
    )
    tmp.replace(path)  # never leave a half-written resume file


def train(config: TrainConfig, resume: bool = True, show_progress: bool = True) -> Path:
    """Train and return the path of `final.safetensors`. With `resume`, continue from out/last.pt."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = CocoDetection(config.data)
    indices = np.arange(len(dataset) if not config.max_images else min(config.max_images, len(dataset)))
    model = build_vfnet(config.preset, class_names=dataset.class_names, **config.model_overrides).train()
    if config.init_backbone:
        init_backbone(model, config.init_backbone)  # before a resume, which replaces every weight
    optimizer = torch.optim.SGD(param_groups(model, config), lr=config.lr, momentum=config.momentum)

    start_epoch, iteration, seconds_before = 0, 0, 0.0
    state_path = out / "last.pt"
    if resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, iteration, seconds_before = state["epoch"], state["iteration"], state.get("seconds", 0.0)

    iters_per_epoch = math.ceil(len(indices) / config.batch_size)
    total = iters_per_epoch * config.epochs
    bar = tqdm(total=total, initial=iteration, disable=not show_progress, unit="it", dynamic_ncols=True)
    started = time.perf_counter()
    images_seen = 0

    def seconds() -> float:
        return seconds_before + time.perf_counter() - started

    for epoch in range(start_epoch, config.epochs):
        rng = np.random.default_rng([config.seed, epoch])  # the same order again after a resume
        order = rng.permutation(indices)
        skip = iteration - epoch * iters_per_epoch  # iterations of this epoch already done
        for step in range(max(skip, 0), iters_per_epoch):
            batch_rng = np.random.default_rng([config.seed, epoch, step])
            picked = order[step * config.batch_size : (step + 1) * config.batch_size]
            samples = [
                augment(dataset[int(i)], model.config.input_size, batch_rng.uniform(*config.scale_range), batch_rng.random() < config.flip) for i in picked
            ]
            lr = learning_rate(config, iteration, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_mult"]
            with torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16, enabled=config.bf16):
                losses = training_step(model, samples, config.cls_loss)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            iteration += 1
            images_seen += len(samples)
            if not math.isfinite(losses["loss"].item()):
                raise FloatingPointError(f"the loss became {losses['loss'].item()} at iteration {iteration}; lower --lr")
            bar.set_postfix(
                epoch=epoch + 1,
                **{name.removeprefix("loss_"): f"{value.item():.3f}" for name, value in losses.items() if name != "loss"},
                lr=f"{lr:.4f}",
                img_s=f"{images_seen / (time.perf_counter() - started):.1f}",
            )
            bar.update(1)
            if iteration % config.checkpoint_every == 0:
                _save_state(state_path, model, optimizer, epoch, iteration, config, seconds())
        _save_state(state_path, model, optimizer, epoch + 1, iteration, config, seconds())
    bar.close()
    model.eval()
    return save_checkpoint(
        model,
        out / "final.safetensors",
        class_names=dataset.class_names,
        dtype=torch.float16,
        extra={
            "training": json.dumps(dataclasses.asdict(config)),
            "training_iterations": str(iteration),
            "training_seconds": f"{seconds():.1f}",
        },
    )
