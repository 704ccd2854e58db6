"""Lesson 4's demo folder, for a learner without photos of their own: a few hundred CIFAR-10 images as JPEG
files of mixed sizes in class folders (no split folders: the loader makes the split), written once into the
data dir. Only images that no model of the course trained on: the course split's validation part, of
classes the source model was not pretrained on."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from . import config, data

DEMO_CLASSES = ("dog", "frog", "horse", "ship")  # target classes: not the source model's


def demo_folder_path() -> Path:
    """data_dir()/demo-photos (demo-photos-fast in fast mode, which writes fewer)."""
    return config.data_dir() / ("demo-photos-fast" if config.fast_mode() else "demo-photos")


def demo_images(splits: data.Splits, per_class: int, seed: int = 0) -> data.ImageData:
    """per_class images of each demo class from the course split's validation part (never trained on)."""
    _, held_out = data.course_split(splits.train)
    return data.per_class(data.select_classes(held_out, DEMO_CLASSES), per_class, seed=seed)


def write_demo_folder(splits: data.Splits | None = None, per_class: int | None = None, seed: int = 0) -> Path:
    """The demo folder, written once (an existing one is used as it is, never rewritten) and atomically:
    each image upscaled to its own size (32 to 160 px a side, any aspect ratio), as photos differ."""
    path = demo_folder_path()
    if path.exists():
        return path
    from PIL import Image

    images = demo_images(splits or data.load_cifar10(), per_class or config.pick(60, 20), seed)
    rng = np.random.default_rng(seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for i, (pixels, label) in enumerate(zip(images.images, images.labels.tolist())):
            width, height = (int(v) for v in rng.integers(32, 161, 2))
            photo = Image.fromarray(pixels.permute(1, 2, 0).numpy()).resize((width, height), Image.Resampling.BICUBIC)
            (tmp / images.classes[label]).mkdir(exist_ok=True)
            photo.save(tmp / images.classes[label] / f"{images.classes[label]}_{i:04d}.jpg", quality=90)
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared data dir's demo folder from other users
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path

