"""Data-parallel training on 2 CPU processes (gloo), started by torchrun with a free port (--standalone).

The multi-process tests run this file itself as torchrun's worker script (the `__main__` block at the end), which
writes what each rank saw and holds into a folder for the test to compare. A tiny linear network on 8 px
synthetic images keeps every launch to seconds; the CLI tests run the real ResNet18 recipe on a tiny image folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from course_lib import config, data, distributed, train

SIZE, CLASSES = 8, 4
BATCH, LR, EPOCHS = 4, 0.05, 2  # BATCH images per rank and step: the global batch of 2 ranks is 2 * BATCH
WEIGHT_TOLERANCE = 1e-5  # 2 ranks' averaged gradients vs one batch's: the same sums in another order


def tiny_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 16), nn.ReLU(), nn.Linear(16, CLASSES))


def tiny_sets() -> tuple[data.ImageData, data.ImageData]:
    return data.synthetic_images(8, CLASSES, SIZE, seed=0), data.synthetic_images(5, CLASSES, SIZE, seed=1)


def tiny_fit(model: nn.Module, batch_size: int, lr: float, **kw) -> train.History:
    train_set, val_set = tiny_sets()
    return train.fit(model, data.Batches(train_set, batch_size, shuffle=True, drop_last=True, seed=7),
                        data.Batches(val_set, 6), epochs=EPOCHS, lr=lr, device="cpu", keep_best=False,
                        progress=False, **kw)


def torchrun(*args: str, cwd: Path, processes: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(config.PROJECT_ROOT), config.DEVICE_ENV: "cpu", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    result = subprocess.run(launcher + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"torchrun failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


# ------------------------------------------------------------------------------- shards, in one process
def test_shards_are_disjoint_cover_the_epoch_and_make_up_the_single_process_batch():
    x, y = torch.arange(10).float()[:, None], torch.zeros(10, dtype=torch.long)
    shards = [data.TensorBatches(x, y, 2, shuffle=True, seed=3).shard(r, 2, equal=True) for r in range(2)]
    whole = data.TensorBatches(x, y, 4, shuffle=True, seed=3)
    for _ in range(2):  # two epochs: a new permutation each, drawn alike on both ranks
        steps = [list(shard) for shard in shards]
        assert len(steps[0]) == len(steps[1]) == len(whole)
        seen = [sorted(int(v) for xb, _ in s for v in xb.flatten()) for s in steps]
        assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(10))
        for (a, _), (b, _), (both, _) in zip(*steps, whole):
            assert sorted(torch.cat([a, b]).flatten().tolist()) == sorted(both.flatten().tolist())


def test_uneven_shards_drop_the_remainder_for_training_and_keep_every_image_for_evaluation():
    x, y = torch.arange(7).float()[:, None], torch.zeros(7, dtype=torch.long)
    training = [data.TensorBatches(x, y, 2, shuffle=True).shard(r, 2, equal=True) for r in range(2)]
    assert [len(b) for b in training] == [2, 2]  # 3 images each, one of the 7 left out this epoch
    evaluation = [data.TensorBatches(x, y, 2).shard(r, 2, equal=False) for r in range(2)]
    seen = sorted(int(v) for b in evaluation for xb, _ in b for v in xb.flatten())
    assert seen == list(range(7))
    with pytest.raises(ValueError, match="cannot be split across 8 ranks"):
        data.TensorBatches(x, y, 2).shard(0, 8, equal=True)


def test_outside_torchrun_everything_is_one_process():
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.scaled_rates([{"params": [], "lr": 0.1}], 0.2) == ([{"params": [], "lr": 0.1}], 0.2)
    assert distributed.init_from_env(torch.device("cpu")) == torch.device("cpu")


def test_sync_batchnorm_on_a_cpu_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ValueError, match="SyncBatchNorm runs on GPUs only"):
        distributed.wrap(nn.BatchNorm2d(3), torch.device("cpu"), sync_batchnorm=True)


def test_a_process_group_refuses_batches_it_cannot_split_and_checkpoints_of_another_size(tmp_path, monkeypatch):
    x, y = torch.zeros(8, 3, SIZE, SIZE), torch.zeros(8, dtype=torch.long)
    tiny_fit(tiny_network(), BATCH, LR, checkpoint=tmp_path / "one.pt")  # written by a single process
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ValueError, match="cannot be split between them: pass data.Batches"):
        train.fit(tiny_network(), [(x, y)], device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"written by a run of 1 process\(es\), this run has 2"):
        train._resumable_state(tmp_path / "one.pt", tiny_network(), EPOCHS, 4)


# ------------------------------------------------------------------------------ two processes, gloo
def test_two_ranks_train_alike_match_one_process_and_resume_from_rank_0s_checkpoint(tmp_path):
    torchrun(__file__, "train", str(tmp_path), cwd=tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    indices = [set(r["shard"]) for r in ranks]  # one epoch of the 32 training images, split by the process group
    assert len(tiny_sets()[0]) == 32 and not indices[0] & indices[1] and indices[0] | indices[1] == set(range(32))

    for key, value in ranks[0]["after_epoch_1"].items():  # identical weights on both ranks
        assert torch.equal(value, ranks[1]["after_epoch_1"][key]), key
    assert ranks[0]["val_acc"] == ranks[1]["val_acc"]  # metrics summed over ranks: one number for both

    # one process with the global batch (2 x BATCH) and the rates of the linear scaling rule (2 x LR)
    single = tiny_network()
    history = tiny_fit(single, 2 * BATCH, 2 * LR)
    for key, value in single.state_dict().items():
        assert torch.allclose(value, ranks[0]["final"][key], atol=WEIGHT_TOLERANCE), key
    assert history["val_acc"] == pytest.approx(ranks[0]["val_acc"], abs=1 / 20)  # at most one of 20 images

    assert (tmp_path / "cut.pt").exists() and train.load_checkpoint(tmp_path / "cut.pt")["world_size"] == 2
    torchrun(__file__, "resume", str(tmp_path), cwd=tmp_path)
    for r in range(2):
        resumed = torch.load(tmp_path / f"resumed{r}.pt", weights_only=False)
        for key, value in resumed.items():
            assert torch.allclose(value, ranks[0]["final"][key], atol=1e-6), key


class Interrupted(Exception):
    """Stands for all ranks being stopped after an epoch."""


def interrupt_after_first_epoch(history: train.History) -> None:
    if len(history) == 1:
        raise Interrupted


def worker(mode: str, out: Path) -> None:
    distributed.init_from_env(torch.device("cpu"))
    rank = distributed.rank()
    if mode == "train":
        train_set, _ = tiny_sets()
        batches = data.TensorBatches(torch.arange(len(train_set)), train_set.labels, BATCH, shuffle=True, seed=7,
                                     drop_last=True)
        distributed.shard(batches, equal=True)
        shard = [int(i) for xb, _ in batches for i in xb]
        model, states = tiny_network(), []
        history = tiny_fit(model, BATCH, LR, callback=lambda h: states.append(
            {k: v.clone() for k, v in model.state_dict().items()}))
        torch.save({"shard": shard, "after_epoch_1": states[0], "final": model.state_dict(),
                    "val_acc": history["val_acc"]}, out / f"rank{rank}.pt")
        try:
            tiny_fit(tiny_network(), BATCH, LR, checkpoint=out / "cut.pt", callback=interrupt_after_first_epoch)
        except Interrupted:
            pass
    elif mode == "resume":
        model = tiny_network()
        tiny_fit(model, BATCH, LR, checkpoint=out / "cut.pt", resume=True)
        torch.save(model.state_dict(), out / f"resumed{rank}.pt")
    distributed.shutdown()


# ----------------------------------------------------------------------------------------- the CLI
def tiny_image_folder(root: Path, per_class: dict[str, int]) -> Path:
    """train/<class>/*.jpg and test/<class>/*.jpg of random pixels, the layout data.load_image_folder reads."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.jpg")
    return root


CLI_ARGS = ("--weights", "random", "--val-size", "4", "--batch-size", "4", "--warmup-epochs", "1",
            "--sweep-steps", "6", "--size", "32", "--epochs", "1")


@pytest.fixture
def image_folder(tmp_path):
    return tiny_image_folder(tmp_path / "images", {"train": 10, "test": 3})


def test_cli_runs_the_recipe_in_one_process(image_folder, tmp_path):
    # one thread, as each of torchrun's processes gets here: two threads are slow on a CPU other jobs keep busy
    env = {**os.environ, "PYTHONPATH": str(config.PROJECT_ROOT), config.DEVICE_ENV: "cpu", config.THREADS_ENV: "1"}
    result = subprocess.run([sys.executable, "-m", "course_lib.cli", "finetune", "--data", str(image_folder),
                             "--out", str(tmp_path / "run"), *CLI_ARGS],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["processes"], summary["global_batch"], summary["test_images"]) == (1, 4, 6)
    assert summary["scaled_peak_lr"] == summary["peak_lr"] and summary["best_epoch"] == 1
    assert "test accuracy of the chosen model (epoch 1)" in result.stdout
    assert (tmp_path / "run" / "model.pt").exists() and (tmp_path / "run" / "checkpoint.pt").exists()


def test_cli_under_torchrun_with_two_processes(image_folder, tmp_path):
    result = torchrun("-m", "course_lib.cli", "finetune", "--data", str(image_folder), "--out", str(tmp_path / "run"),
                      *CLI_ARGS, cwd=tmp_path)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["processes"], summary["global_batch"], summary["test_images"]) == (2, 8, 6)
    assert summary["scaled_peak_lr"] == pytest.approx(2 * summary["peak_lr"])
    assert result.stdout.count("test accuracy of the chosen model") == 1  # rank 0 alone prints


def test_cli_refuses_to_overwrite_a_checkpoint(tmp_path, capsys):
    from course_lib import cli

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(SystemExit):
        cli.main(["finetune", "--epochs", "1", "--out", str(tmp_path / "run")])
    assert "pass --resume to continue it" in capsys.readouterr().err


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]))
