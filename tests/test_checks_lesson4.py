"""Lesson 4's exercise checks pass differently written right answers and fail near misses with a hint about
the mistake; every answer in source/cases/ scores the same on the public check and the hidden tests."""
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from course_lib import checks, data, grading
from graded_cells import graded_parts_of, passes_with

SOURCE = grading.SOURCE_DIR / "04_your_own_images.ipynb"


# ------------------------------------------------------------------------------------ split_by_class
def split_with(rounding=round, at_least_one=True, per_class=True, seeded=True, swap=False, labels_out=False):
    def split_by_class(labels, val_fraction, seed):
        gen = torch.Generator().manual_seed(seed if seeded else random.randrange(10 ** 6))
        groups = {c: [i for i, label in enumerate(labels) if label == c] for c in set(labels)} if per_class else \
            {None: list(range(len(labels)))}
        train, val = [], []
        for members in groups.values():
            order = [members[j] for j in torch.randperm(len(members), generator=gen).tolist()]
            k = rounding(len(order) * val_fraction)
            k = max(1, k) if at_least_one else k
            val += order[:k]
            train += order[k:]
        if labels_out:
            train, val = [labels[i] for i in train], [labels[i] for i in val]
        return (val, train) if swap else (train, val)
    return split_by_class


def numpy_split(labels, val_fraction, seed):
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    val = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        val.extend(members[: max(1, math.floor(len(members) * val_fraction + 0.5))])
    return np.setdiff1d(np.arange(len(labels)), val), np.array(sorted(val))


def test_check_split_by_class():
    for right in (split_with(), split_with(rounding=math.ceil), split_with(rounding=math.floor), numpy_split):
        checks.check_split_by_class(right)
        checks.check_split_by_class(right, seed=41)
    wrong = {"at least one validation image": split_with(at_least_one=False, rounding=math.floor),
             "EACH class separately": split_with(per_class=False),
             "same seed": split_with(seeded=False),
             "swapped": split_with(swap=True),
             "not their labels": split_with(labels_out=True),
             "every seed": lambda labels, f, seed: split_with()(labels, f, 0),
             "out of both parts": lambda labels, f, seed: (split_with()(labels, f, seed)[0][1:],
                                                          split_with()(labels, f, seed)[1]),
             "in both parts": lambda labels, f, seed: (list(range(len(labels))), split_with()(labels, f, seed)[1])}
    for hint, answer in wrong.items():
        with pytest.raises(AssertionError, match=hint):
            checks.check_split_by_class(answer)


# -------------------------------------------------------------------------------------- predict_file
def predict_with(decode=True, scale=True, normalize=True, eval_mode=True, softmax=True, names=True, k=None,
                 sort=True):
    def predict_file(model, path, classes, size, mean, std):
        if decode:
            pixels = data.decode_image_file(path, size).float()
        else:
            with Image.open(path) as img:
                pixels = torch.from_numpy(np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)).copy())
            pixels = pixels.permute(2, 0, 1).float()
        x = pixels[None] / 255 if scale else pixels[None]
        if normalize:
            x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        if eval_mode:
            model.eval()
        with torch.no_grad():
            out = model(x)[0]
        probs = out.softmax(0) if softmax else out
        values, idx = probs.topk(min(3, len(classes)) if k is None else k)
        pairs = [(classes[i] if names else i, float(v)) for v, i in zip(values.tolist(), idx.tolist())]
        return pairs if sort else pairs[::-1]
    return predict_file


def predict_by_hand(model, path, classes, size, mean, std):
    """Written without the library's decoder: PIL's fit, numpy, F.softmax and sorted."""
    from PIL import ImageOps

    with Image.open(path) as img:
        img = ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BICUBIC)
        x = torch.tensor(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1).unsqueeze(0)
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    model.eval()
    with torch.no_grad():
        p = F.softmax(model(x), dim=1)[0].tolist()
    return sorted(zip(classes, p), key=lambda t: -t[1])[:3]


def test_check_predict_file():
    checks.check_predict_file(predict_with())
    checks.check_predict_file(predict_by_hand)
    checks.check_predict_file(predict_by_hand, seed=7)
    wrong = {"normalize the pixels": predict_with(normalize=False),
             "divide by 255": predict_with(scale=False),
             "centre crop": predict_with(decode=False),
             "eval mode": predict_with(eval_mode=False),
             "softmax": predict_with(softmax=False),
             "not indices": predict_with(names=False),
             "three most probable classes, or every class": predict_with(k=1),
             "raised RuntimeError": predict_with(k=3),  # a fixed topk(3): the two-class case has 2
             "most probable first": predict_with(sort=False)}
    for hint, answer in wrong.items():
        with pytest.raises(AssertionError, match=hint):
            checks.check_predict_file(answer)


# -------------------------------------------------------------------------------- choose_freeze_depth
def freeze_with(margin_used=True, deepest=True, strict=False, skip_diverged=True, position=False, row=False):
    def choose_freeze_depth(rows, margin):
        runs = [r for r in rows if r["val_acc"] is not None] if skip_diverged else rows
        best = max(r["val_acc"] for r in runs)
        m = margin if margin_used else 0
        close = [r for r in runs if (r["val_acc"] > best - m if strict else r["val_acc"] >= best - m - 1e-12)]
        chosen = (max if deepest else min)(close, key=lambda r: r["depth"])
        return rows.index(chosen) if position else chosen if row else chosen["depth"]
    return choose_freeze_depth


def freeze_sorted(rows, margin):
    runs = sorted((r for r in rows if r["val_acc"] is not None), key=lambda r: -r["depth"])
    best = max(r["val_acc"] for r in runs)
    return next(r["depth"] for r in runs if best - r["val_acc"] <= margin + 1e-9)


def test_check_choose_freeze_depth():
    for right in (freeze_with(), freeze_sorted):
        checks.check_choose_freeze_depth(right)
        checks.check_choose_freeze_depth(right, seed=93)
    wrong = {"most accurate run": freeze_with(margin_used=False),
             "DEEPEST": freeze_with(deepest=False),
             "exactly `margin` below": freeze_with(strict=True),
             "diverged run": freeze_with(skip_diverged=False),
             "position in the list": freeze_with(position=True),
             "whole row": freeze_with(row=True)}
    for hint, answer in wrong.items():
        with pytest.raises(AssertionError, match=hint):
            checks.check_choose_freeze_depth(answer)


# ---------------------------------------------------------------- the case suite, public and hidden
CASES = grading.load_cases(SOURCE)
ALL = [(gid, kind, name) for gid, kinds in CASES.items() for kind in ("wrong", "right") for name in kinds[kind]]


def test_every_exercise_has_its_cases():
    import nbformat

    nb = nbformat.read(SOURCE, as_version=4)
    assert sorted(CASES) == sorted(grading.grade_id(c) for c in nb.cells if grading.is_answer(c))
    for kinds in CASES.values():
        assert len(kinds["wrong"]) >= grading.MIN_WRONG and len(kinds["right"]) >= grading.MIN_RIGHT


@pytest.mark.parametrize("gid,kind,name", ALL, ids=[f"{g}-{k}-{n}" for g, k, n in ALL])
def test_case_scores_the_same_on_public_check_and_hidden_tests(gid, kind, name):
    public, hidden = graded_parts_of(SOURCE, gid)
    want = kind == "right"
    namespace = {"data": data, "Image": Image}
    assert passes_with(CASES[gid][kind][name], public, namespace) is want, f"public check: {name}"
    assert passes_with(CASES[gid][kind][name], hidden, namespace) is want, f"hidden tests: {name}"
