"""Times every lesson end to end in normal mode, as a learner meets it: a fresh kernel, top to bottom, with
the exercises solved (the sources), after a separately timed one-off pretraining of the course's source
model. Writes benchmarks/results/lesson_times.md, which benchmarks/README.md quotes verbatim.

    python benchmarks/lesson_times.py [--lessons 01_gradient_descent ...] [--threads N] [--keep DIR]

--threads N limits torch to N threads (e.g. 1 to see a machine of about half this one's throughput).
Executed notebooks hold CIFAR-10 images, so they are kept only where --keep says, never in the repository.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import header  # noqa: E402  (benchmarks/ is the script's folder)

RESULT_MARKERS = ("epoch(s); one epoch", "the rate sweep", "TEST accuracy", "test accuracy", "the recipe reports", "chosen on validation",
                  "this lesson ran", "(planned:", "its validation accuracy on its own", "pretrained minus scratch",
                  "chosen: ", "zero-shot", "Best at 32 px", "Using ")


def execute(path: Path, env: dict, keep: Path | None) -> tuple[float, list[str], str | None]:
    """(seconds, result lines, first error) of one fresh-kernel run of the notebook."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    os.environ.update(env)
    client = NotebookClient(nb, timeout=3600, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    lines, error = [], None
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                lines += [l.strip() for l in out["text"].splitlines() if any(m in l for m in RESULT_MARKERS)]
            elif out.get("output_type") == "error" and error is None:
                error = f"{out['ename']}: {out['evalue'][:200]}"
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, keep / path.name)
    return seconds, lines, error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lessons", nargs="*", default=None, help="lesson file stems (default: all in source/)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the course's choice)")
    parser.add_argument("--keep", type=Path, default=None, help="folder for the executed notebooks")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data folder to use and keep (default: a throwaway one); a source model already "
                             "pretrained there is reused, and the table says so")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lesson_times.md")
    args = parser.parse_args()
    import torch

    lessons = [p for p in sorted((ROOT / "source").glob("*.ipynb"))
               if args.lessons is None or p.stem in args.lessons]
    with tempfile.TemporaryDirectory(prefix="lesson-times-") as throwaway:
        data_dir = str(args.data_dir or throwaway)
        env = {"COURSE_DATA_DIR": data_dir, "MPLBACKEND": "Agg", "COURSE_FAST": "0"}
        if args.threads:
            env["COURSE_THREADS"] = str(args.threads)
        os.environ.update(env)
        from course_lib import config, data, pretrained

        data.load_cifar10(progress=False)  # decoding the data once is not part of any lesson's time
        from course_lib import models, train

        batch = (torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,)))
        speed = train.step_throughput(models.build_resnet18(10), [batch] * 4, device=config.get_device())
        rows = []
        needs_source_model = any("pretrained." in p.read_text() for p in lessons)  # lessons 2 and 3 do
        if needs_source_model and pretrained.source_checkpoint_path().exists():
            made = train.load_checkpoint(pretrained.source_checkpoint_path())
            history = train.History.from_dict(made["history"])
            rows.append(("one-off: pretraining the course's source model, in an earlier run in --data-dir (its time "
                         "read from the checkpoint's history: the sum of its epochs)", sum(history["seconds"]),
                         [f"{len(history)} epoch(s), {history.status()}"], None))
        elif needs_source_model:
            start = time.perf_counter()
            run = subprocess.run([sys.executable, "-c", "from course_lib import pretrained; pretrained.pretrain_source_model()"],
                                 check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
            plan = [l.strip() for l in run.stdout.splitlines() if any(m in l for m in RESULT_MARKERS)]
            rows.append(("one-off: pretraining the course's source model", time.perf_counter() - start, plan, None))
        for path in lessons:
            rows.append((path.stem, *execute(path, env, args.keep)))
    lines = [f"{header(config.get_device(), config.torch_threads())}, normal mode; this machine trains ResNet18 at 32 px at "
             f"{speed:,.0f} images/s (a training step on a batch of 256).", "",
             "| lesson | wall time | results printed by the run |", "| --- | --- | --- |"]
    for name, seconds, results, error in rows:
        said = "; ".join(results) if not error else f"ERROR {error}"
        lines.append(f"| {name} | {seconds / 60:.1f} min | {said.replace('|', '/')} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if any(error for *_, error in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
