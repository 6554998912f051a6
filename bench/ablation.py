"""The paper's ablation in our own numbers: five variants x three seeds, trained, exported, served, scored.

    (a) VFNet: Varifocal Loss on IACS targets, star deformable convs, box refinement
    (b) (a) with focal loss on binary targets
    (c) the design VFNet replaces (FCOS/ATSS): a centerness branch, score = sigmoid(cls) * sigmoid(ctr),
        focal loss on binary targets, no star DCN, no refinement
    (d) (a) with plain 3x3 convs in place of the star DCN
    (e) (a) without box refinement (IACS target, scores and boxes from the initial regression)

Every run is the `vfnet train` command recorded with it (same preset, data, augmentation, schedule;
seeds 0, 1, 2), then `vfnet export onnx` and `vfnet eval` (normal, and `--oracle`) on the held-out
split through ONNX Runtime, exactly as served. Records go to docs/ablation_runs.json (one entry per
finished run), and `report` writes docs/ablation.md and docs/ablation.svg from them alone.

    python bench/ablation.py train --workers 2        # runs what is not recorded yet; resumable
    python bench/ablation.py train --workers 2 --max-runs 2   # each worker stops after two runs
    python bench/ablation.py report                   # docs/ablation.md + docs/ablation.svg
    python bench/ablation.py peek a-seed0             # AP of a run's latest resume state, mid-training

`train` is safe to stop at any moment and to start again: each run resumes from its `last.pt`, a
run another worker holds (a lock file with its pid) is skipped, and a recorded run is never redone.
Two workers of one thread each train about 1.45x faster in total than one of two threads on a
2-core CPU (on the AVX-512 BF16 EPYC these runs were made on, frozen backbone, bf16: 9 images/s
each, side by side, against 12.5 images/s for one run on two threads; torch's CPU convolutions scale
poorly to a second thread). A run that stops resumes from its `last.pt`, on the same machine: where the
machine does not outlive the session, give each worker only the runs it can finish (`--max-runs`).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ablation_report import write_report  # bench/ablation_report.py
from ablation_setting import ROOT, SEEDS, VARIANTS, Schedule, Variant  # bench/ablation_setting.py
from report import cpu_description  # bench/report.py

VFNET = str(Path(sys.executable).with_name("vfnet"))  # the console script of this environment
RECORDS = ROOT / "docs" / "ablation_runs.json"


def train_command(variant: Variant, seed: int, s: Schedule, out: Path) -> list[str]:
    settings = [f"input_size=[{s.input_size},{s.input_size}]", "frozen_stages=4", "norm_eval=true", *variant.settings]
    return [
        "vfnet", "train", "--data", s.train, "--out", str(out), "--preset", "vfnet_r18_demo",
        "--init-backbone", s.init_backbone, *[arg for setting in settings for arg in ("--set", setting)],
        "--cls-loss", variant.cls_loss, "--epochs", str(s.epochs), "--lr-steps", *map(str, s.lr_steps),
        "--warmup-iters", str(s.warmup_iters), "--batch-size", str(s.batch_size), "--max-images", str(s.max_images),
        "--checkpoint-every", "50", "--threads", str(s.threads), "--seed", str(seed), *(["--bf16"] if s.bf16 else []),
    ]  # fmt: skip


def run_name(variant: Variant, seed: int) -> str:
    return f"{variant.key}-seed{seed}"


def read_records() -> list[dict]:
    return json.loads(RECORDS.read_text()) if RECORDS.exists() else []


def add_record(record: dict) -> None:
    """Append one run's record; workers write one at a time (an flock on a side file)."""
    with open(RECORDS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = [r for r in read_records() if r["run"] != record["run"]] + [record]
        records.sort(key=lambda r: r["run"])
        tmp = RECORDS.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=1) + "\n")
        tmp.replace(RECORDS)


def claim(directory: Path) -> bool:
    """Take the run in `directory` for this process, unless a live process holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / "worker.pid"
    if lock.exists():
        try:
            os.kill(int(lock.read_text()), 0)
            return False  # its worker is alive
        except (ProcessLookupError, ValueError):
            lock.unlink(missing_ok=True)  # a stopped worker's: take it over (another worker may have already)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def run_logged(command: list[str], log: Path) -> str:
    """Run a `vfnet ...` command, appending its output to `log`; its stdout. CalledProcessError when it fails."""
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run([VFNET, *command[1:]], cwd=ROOT, stdout=subprocess.PIPE, stderr=out, text=True, check=True)
        out.write(done.stdout)
    return done.stdout


def train_one(variant: Variant, seed: int, s: Schedule, runs: Path) -> dict:
    """Train (or resume), export, evaluate twice; the run's record."""
    from vfnet.model import read_checkpoint_metadata

    out = runs / run_name(variant, seed)
    log = out / "log.txt"
    command = train_command(variant, seed, s, out)
    run_logged(command, log)
    meta = read_checkpoint_metadata(out / "final.safetensors")
    onnx = out / "model.onnx"
    run_logged(["vfnet", "export", "onnx", "--weights", str(out / "final.safetensors"), "--out", str(onnx)], log)
    started = time.perf_counter()
    evaluate = ["vfnet", "eval", "--model", str(onnx), "--data", s.val]
    normal = json.loads(run_logged(evaluate, log).strip().splitlines()[-1])
    oracle = json.loads(run_logged([*evaluate, "--oracle"], log).strip().splitlines()[-1])
    return {
        "run": run_name(variant, seed),
        "variant": variant.key,
        "title": variant.title,
        "seed": seed,
        "command": " ".join(command),
        "eval_command": " ".join(evaluate) + "  [--oracle]",
        "iterations": int(meta["training_iterations"]),
        "train_hours": round(float(meta["training_seconds"]) / 3600, 3),
        "eval_seconds": round(time.perf_counter() - started, 1),
        "cpu": cpu_description(),
        "metrics": normal,
        "oracle": oracle,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def train_all(args: argparse.Namespace) -> int:
    """Work through the runs, seed by seed (every variant gets seed 0 first), skipping recorded ones."""
    schedule = Schedule()
    started = 0
    for seed in SEEDS:
        for variant in VARIANTS:
            name = run_name(variant, seed)
            if args.max_runs and started >= args.max_runs:
                return 0
            if not claim(args.runs / name):
                continue
            try:
                if name in {r["run"] for r in read_records()}:
                    continue  # recorded (perhaps by another worker since this one started)
                print(f"{time.strftime('%H:%M:%S')} {name}: training ({args.runs / name / 'log.txt'})", flush=True)
                started += 1
                record = train_one(variant, seed, schedule, args.runs)
                add_record(record)
            except subprocess.CalledProcessError as exc:
                print(f"{name}: {' '.join(exc.cmd[1:3])} failed with exit code {exc.returncode}; see its log", flush=True)
                return 1
            finally:
                (args.runs / name / "worker.pid").unlink(missing_ok=True)
            print(f"{time.strftime('%H:%M:%S')} {name}: AP {record['metrics']['AP']:.4f}, oracle AP {record['oracle']['AP']:.4f}", flush=True)
    return 0


def peek(run: Path, schedule: Schedule) -> int:
    """Print the held-out AP of `run`'s last.pt (the weights so far), through the runtime's torch
    backend on one thread (beside two training workers, more threads only fight over the cores)."""
    import tempfile

    import torch

    from vfnet.model import build_vfnet, save_checkpoint
    from vfnet.server.coco import CocoDetection
    from vfnet.server.evaluate import evaluate
    from vfnet.server.runtime import load_detector

    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    config = json.loads(state["config"])
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in config["model_overrides"].items()}
    model = build_vfnet(config["preset"], class_names=CocoDetection(ROOT / config["data"]).class_names, **overrides)
    model.load_state_dict(state["model"])
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = save_checkpoint(model.eval(), Path(scratch) / "peek.safetensors")
        detector = load_detector(checkpoint, backend="torch", intra_op_threads=1, max_pixels=None)
        metrics = evaluate(detector, ROOT / schedule.val)
    print(f"{run.name}: iteration {state['iteration']}, {state['seconds'] / 3600:.2f} h: AP {metrics['AP']:.4f}, AP50 {metrics['AP50']:.4f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("train", "report", "peek"))
    parser.add_argument("run", nargs="?", help="peek: the run's name, e.g. a-seed0")
    parser.add_argument("--runs", type=Path, default=ROOT / ".data" / "ablation", help="folder for the runs (default .data/ablation)")
    parser.add_argument("--workers", type=int, default=1, help="train: start this many worker processes (each one thread)")
    parser.add_argument(
        "--max-runs",
        type=int,
        default=0,
        help="train: each worker takes at most this many runs, then stops (0: no limit); "
        "on a machine that does not outlive the session, start only what can finish",
    )
    args = parser.parse_args()
    if args.action == "peek":
        if not args.run:
            parser.error("peek needs a run name, e.g. a-seed0")
        return peek(args.runs / args.run, Schedule())
    if args.action == "report":
        return write_report(read_records(), Schedule())
    if args.workers > 1:
        worker = [sys.executable, __file__, "train", "--runs", str(args.runs), "--max-runs", str(args.max_runs)]
        workers = [subprocess.Popen(worker) for _ in range(args.workers)]
        return max(w.wait() for w in workers)
    return train_all(args)


if __name__ == "__main__":
    sys.exit(main())
