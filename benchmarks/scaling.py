"""Training throughput of `fit` with 1 process and with N processes under torchrun (data parallelism), on
this machine, every figure measured in this run.

    python benchmarks/scaling.py                # CPU: 1 vs 2 processes (gloo), ResNet18 at 32 px
    python benchmarks/scaling.py --gpu          # 1 GPU vs all GPUs (nccl), ResNet18 at 224 px with AMP,
                                                # written to benchmarks/results/scaling-gpu.md

Each process trains ResNet18 on its own part of synthetic images in batches of --batch (so N processes
take N times the images per step, the linear scaling rule's setting), for two epochs of --steps steps; the
second epoch's training images/s over all processes is the figure (the first warms up). On a CPU the
processes share the same cores (each gets its share of threads), so little gain is expected: data
parallelism adds devices, and a CPU's cores are already all used by one process. A CPU run therefore also
times one process with the threads each of the N gets, so that what the thread count does (on a machine
loaded by other jobs, fewer threads can be faster) is not credited to data parallelism. Rounds alternate the
setups, as in engine.py, and each figure is the median of --rounds rounds with its min–max.

Writes benchmarks/results/scaling.md (--out) with the machine it ran on. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from course_lib import config, data, distributed, models, train
from machine import header, load_note

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def worker(args) -> None:
    """One rank: fit on synthetic images; rank 0 writes the second epoch's images/s to --report."""
    device = distributed.init_from_env(config.get_device())
    images = data.synthetic_images(args.steps * args.batch * distributed.world_size() // 10 + 1, 10, 32)
    batches = data.Batches(images, args.batch, shuffle=True, augment=True, drop_last=True, size=args.size,
                           device=device, steps=args.steps)
    history = train.fit(models.build_resnet18(10), batches, epochs=2, lr=0.01, schedule="constant",
                        device=device, progress=False)
    if distributed.is_main():
        Path(args.report).write_text(json.dumps({"images_per_s": history.epochs[-1]["images_per_s"],
                                                 "threads": torch.get_num_threads()}))
    distributed.shutdown()


def measure(processes: int, threads: int | None, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   __file__, "--worker", "--report", str(report), "--size", str(args.size),
                   "--batch", str(args.batch), "--steps", str(args.steps)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("OMP_NUM_THREADS", None)  # the course shares the cores out between the processes itself
        if threads is not None:
            env["COURSE_THREADS"] = str(threads)
        subprocess.run(command, check=True, env=env)
        return json.loads(report.read_text())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu", action="store_true", help="1 GPU vs all GPUs, at 224 px with AMP")
    parser.add_argument("--processes", type=int, default=None, help="the many-process count (default: 2 on a CPU, "
                                                                     "every GPU with --gpu)")
    parser.add_argument("--size", type=int, default=None, help="input size (default: 32 on a CPU, 224 with --gpu)")
    parser.add_argument("--batch", type=int, default=None, help="images per step and process (default: 32, "
                                                                "128 with --gpu)")
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (default: 6, 30 with --gpu)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu needs CUDA devices, and torch sees none here")
    gpu = args.gpu
    args.size = args.size or (224 if gpu else 32)
    args.batch = args.batch or (128 if gpu else 32)
    args.steps = args.steps or (30 if gpu else 6)
    many = args.processes or (torch.cuda.device_count() if gpu else 2)
    out = args.out or RESULTS / ("scaling-gpu.md" if gpu else "scaling.md")
    if not gpu:
        os.environ["COURSE_DEVICE"] = "cpu"

    # (processes, threads each): on a CPU also one process with one process's share of the threads of the
    # many, so that what comes from the thread count is not credited to data parallelism
    setups = [(1, None), (many, None)] if gpu else [(1, None), (1, max(1, config.torch_threads() // many)), (many, None)]
    load_before = os.getloadavg()[0]  # other jobs on the same machine take cores away from the processes timed
    runs = {setup: [] for setup in setups}
    for _ in range(args.rounds):
        for setup in setups:
            runs[setup].append(measure(*setup, args))
    device = torch.device("cuda" if gpu else "cpu")
    single = statistics.median(r["images_per_s"] for r in runs[setups[0]])
    lines = [f"{header(device, runs[setups[0]][0]['threads'])}; each process: ResNet18 at {args.size} px, batch "
             f"{args.batch}, {args.steps} timed steps" + (", AMP" if gpu else "") + f"; {load_note(load_before)}.", "",
             "| processes | torch threads each | training images/s, all processes | min–max | vs the first row |",
             "| --- | --- | --- | --- | --- |"]
    for setup in setups:
        n, speeds = setup[0], [r["images_per_s"] for r in runs[setup]]
        median = statistics.median(speeds)
        lines.append(f"| {n} ({'GPUs' if gpu else 'on the same CPU'}) | {runs[setup][0]['threads']} | {median:.0f} | "
                     f"{min(speeds):.0f}–{max(speeds):.0f} | {median / single:.2f}x |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
