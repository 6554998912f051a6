"""Ablation: Varifocal Loss with IACS targets vs focal loss with binary targets, and the oracle.

Both runs share the preset, data, schedule, augmentation and seed; only the classification loss
differs: (a) VFL, target = IoU of the refined box with its ground truth (VFNet); (b) sigmoid focal
loss (alpha 0.25, gamma 2) with binary targets, no IoU in the target and no centerness. Each model
is evaluated on the held-out set normally and with (c) the oracle: every kept detection's score
replaced by its IoU with the best ground truth of its class, which ranks by localisation quality
perfectly. The paper's claim: (a) > (b), and the oracle far above both.

    python bench/ablation_vfl.py --train .data/synth_train --val .data/synth_val    # writes docs/ablation.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vfnet.model import read_checkpoint_metadata
from vfnet.server.runtime import load_detector
from vfnet.server.runtime.load import DEMO_CHECKPOINT
from vfnet.train.dataset import CocoDetection
from vfnet.train.evaluate import as_coco_results, coco_metrics, run_detector
from vfnet.train.trainer import TrainConfig, train

DOC = Path(__file__).resolve().parents[1] / "docs" / "ablation.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True)
    parser.add_argument("--val", required=True)
    parser.add_argument("--out", default=".data/ablation")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-images", type=int, default=3000)
    parser.add_argument("--warmup-iters", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    rows = {}
    val = CocoDetection(args.val)
    for name, loss in (("(a) Varifocal Loss, IACS targets", "varifocal"), ("(b) focal loss, binary targets", "focal")):
        config = TrainConfig(
            data=args.train,
            out=f"{args.out}/{loss}",
            epochs=args.epochs,
            lr_steps=(args.epochs - 1,),
            warmup_iters=args.warmup_iters,
            max_images=args.max_images,
            cls_loss=loss,
            threads=args.threads,
            bf16=True,
            seed=0,
        )
        started = time.perf_counter()
        checkpoint = train(config)
        hours = (time.perf_counter() - started) / 3600
        detector = load_detector(checkpoint, backend="torch", intra_op_threads=args.threads, max_pixels=None)
        results = run_detector(detector, val)  # one inference pass, scored two ways
        rows[name] = {
            "normal": coco_metrics(val.annotations, as_coco_results(results, val)),
            "oracle": coco_metrics(val.annotations, as_coco_results(results, val, oracle=True)),
            "hours": hours,
            "iterations": int(read_checkpoint_metadata(checkpoint)["training_iterations"]),
        }
        print(name, json.dumps({k: v for k, v in rows[name].items() if k in ("normal", "oracle")}), flush=True)

    text = report(rows, config, args)
    DOC.write_text(text)
    print(text)


def report(rows: dict, config: TrainConfig, args: argparse.Namespace) -> str:
    """docs/ablation.md from the two runs' metrics (`config`: either run's settings but the loss)."""
    demo_iterations = read_checkpoint_metadata(DEMO_CHECKPOINT)["training_iterations"]
    (a, b) = rows.values()
    lines = [
        "# Ablation: Varifocal Loss vs focal loss, and the oracle",
        "",
        f"`python bench/ablation_vfl.py --train {args.train} --val {args.val} --epochs {args.epochs} "
        f"--max-images {args.max_images} --warmup-iters {args.warmup_iters}`. Preset `{config.preset}`, random "
        f"initialisation, the first {config.max_images} images of the synthetic training set (seed 1), {config.epochs} epochs, "
        f"batch {config.batch_size}, SGD lr {config.lr} with {config.warmup_iters} warm-up iterations and a 10x drop after epoch "
        f"{config.lr_steps[0]}, bf16 autocast, seed 0 — identical for both runs except the classification loss. That is "
        f"{a['iterations']} iterations, a much shorter schedule than the bundled demo model's {demo_iterations} "
        "(server/demo/README.md): both models here are early in training. Evaluated with pycocotools on the held-out "
        "synthetic set (seed 2, 500 images) through `vfnet.server.runtime` (torch backend).",
        "",
        "| training loss | AP | AP50 | AP75 | oracle AP | oracle AP50 | oracle AP75 | train time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        n, o = r["normal"], r["oracle"]
        lines.append(
            f"| {name} | **{n['AP']:.3f}** | {n['AP50']:.3f} | {n['AP75']:.3f} | {o['AP']:.3f} | {o['AP50']:.3f} | {o['AP75']:.3f} | {r['hours']:.2f} h |"
        )
    gap = a["normal"]["AP"] - b["normal"]["AP"]
    low, high = sorted(r["oracle"]["AP"] for r in rows.values())
    own_low, own_high = sorted(r["normal"]["AP"] for r in rows.values())
    lines += [
        "",
        f"VFL − FL: {gap:+.3f} AP ({gap / b['normal']['AP']:+.0%} relative). Oracle − VFL: "
        f"{a['oracle']['AP'] - a['normal']['AP']:+.3f} AP (the oracle only re-scores, by their IoU with the best ground "
        "truth of their class, the detections each model kept after its own NMS).",
        "",
        f"Oracle AP {low:.2f}–{high:.2f} against the models' own scores' {own_low:.3f}–{own_high:.3f}: how far ranking "
        f"lags localisation. The oracle AP of (a) minus that of (b), {a['oracle']['AP'] - b['oracle']['AP']:+.3f}, compares "
        "the boxes each model kept. The paper's claim is (a) > (b) and the oracle far above both; a short schedule shows "
        "the direction, not the size of the gap at convergence.",
        "",
    ]
    return "\n".join(lines)

if __name__ == "__main__":
    main()
