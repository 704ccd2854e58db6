"""CIFAR-10 and image folders as uint8 tensors: decoded once, cached on disk, batched and augmented on the device.

Per-sample PIL work in a DataLoader costs more than a small network's forward pass on a CPU, so the
course keeps a whole dataset as one (N, 3, H, W) uint8 tensor and does crop/flip/resize/normalize on
whole batches (the idea of KellerJordan/cifar10-airbench).
"""
from __future__ import annotations

import glob
import io
import math
import os
import pickle
import tarfile
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import config, images
from .storage import (SAVE_OVERHEAD, DamagedFileError, NoSpaceError, check_space, fingerprint, load_verified,
                      remove_abandoned_temporaries, save_verified)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# "efficientnet-lite": TensorFlow's (pixel - 127) / 128 on 0..255 pixels, which the Lite models were trained with
NORMALIZATIONS = {"cifar": (CIFAR10_MEAN, CIFAR10_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
                  "efficientnet-lite": ((127 / 255,) * 3, (128 / 255,) * 3)}

CIFAR10_ENV = "COURSE_CIFAR10"
LOCAL_CIFAR10_NAMES = ("cifar-10-batches-py", "cifar-10-python.tar.gz", "cifar10", "cifar10-jpeg.tar.gz")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_CACHE_VERSION = 2  # 2: caches carry a checksum


class DataError(RuntimeError):
    """Data missing, corrupt or in the wrong layout; the message says what to do."""


@dataclass
class ImageData:
    """Images as one uint8 tensor (N, 3, H, W), int64 labels (N,) and the class names.

    `index` holds each image's position in the split it was loaded from, kept through subsets, so that
    "these two sets share no image" can be checked, not assumed.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    index: torch.Tensor | None = None

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images")
        self.classes = list(self.classes)
        if self.index is None:
            self.index = torch.arange(len(self.labels))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        h, w = self.images.shape[-2:]
        return f"ImageData({len(self)} images {h}x{w}, {len(self.classes)} classes)"

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    def subset(self, indices: torch.Tensor | Sequence[int]) -> "ImageData":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageData(self.images[idx], self.labels[idx], self.classes, self.index[idx])

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=len(self.classes))


@dataclass
class Splits:
    """A dataset's train and test parts, the validation part where one was given or made, and where they
    came from (`origin`, said to the learner)."""

    train: ImageData
    test: ImageData
    val: ImageData | None = None
    origin: str = ""


# ----------------------------------------------------------------------------------------- sources
def load_cifar10(source: str | Path | None = None, *, download: bool | None = None,
                 cache: bool = True, progress: bool = True) -> Splits:
    """CIFAR-10 from the first source that works, decoded once and cached under the data dir.

    Order: an explicit `source` (or COURSE_CIFAR10); a torchvision-format copy in the data dir
    (cifar-10-batches-py/ or cifar-10-python.tar.gz); an ImageFolder copy there (cifar10/ or
    cifar10-jpeg.tar.gz); else torchvision's download (skipped when offline), which writes the
    torchvision-format copy. An online user gets the download; an offline one a local copy.
    """
    root = config.data_dir()
    given = source or os.environ.get(CIFAR10_ENV)
    path = Path(given).expanduser() if given else None
    if path is not None and not path.exists():
        raise DataError(f"CIFAR-10 source {path} does not exist (from {'the call' if source else CIFAR10_ENV}). "
                        "Point it at cifar-10-python.tar.gz, cifar-10-batches-py/, or an ImageFolder folder/.tar.gz.")
    if path is None:
        path = find_local_cifar10(root)
    if path is None:
        path = _download_cifar10(root, download)
    parts, _ = _load_cached(path, size=32, cache=cache, progress=progress, expect=_cifar10_expected(path))
    return Splits(parts["train"], parts["test"])


def _cifar10_expected(path: Path) -> Callable[[list[str], list[str]], None]:
    """The check that `path` holds CIFAR-10's parts and classes, for _load_cached to make before decoding."""
    def check(parts: list[str], classes: list[str]):
        if set(parts) != {"train", "test"}:
            raise DataError(f"{path} holds the parts {sorted(parts)}, not CIFAR-10's train/ and test/. "
                            "Point to a complete CIFAR-10 copy (re-download or re-copy it).")
        if sorted(classes) != sorted(CIFAR10_CLASSES):
            missing, foreign = sorted(set(CIFAR10_CLASSES) - set(classes)), sorted(set(classes) - set(CIFAR10_CLASSES))
            raise DataError(f"{path} holds {len(classes)} classes, not CIFAR-10's 10"
                            + (f": it lacks {', '.join(missing)}" if missing else "")
                            + (f"{'; it' if missing else ': it'} has {', '.join(foreign)}, which CIFAR-10 has not"
                               if foreign else "") + ". Re-download or re-copy CIFAR-10.")
    return check


LAYOUTS = ("<class>/*.jpg (a stratified train/val/test split is made), train/<class>/* with val/<class>/* "
           "and/or test/<class>/*")


def load_image_folder(path: str | Path, size: int = 64, *, val_fraction: float = 0.2, test_fraction: float = 0.2,
                      seed: int = 0, cache: bool = True, progress: bool = True) -> Splits:
    """Photos in a folder, .tar.gz or .zip, in any of the common layouts, as train, validation and test parts.

    Layouts: train/ + test/ (validation carved from train), train/ + val/ (+ test/: PyTorch's transfer-learning
    tutorial), or class folders alone (a stratified split by val_fraction and test_fraction, seeded). The
    layout is checked from the file names, and every file's header read, before any image is decoded, so a
    bad folder fails in seconds with what to fix. Images of any size are fitted to `size` (shorter side,
    then a centre crop); grayscale, CMYK and transparent ones are converted to RGB and `origin` says so.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist. Give a folder, .tar.gz or .zip holding {LAYOUTS}.")
    parts, notes = _load_cached(path, size=size, cache=cache, progress=progress)
    rule = (f"{val_fraction:.0%} of each class to validation, {test_fraction:.0%} to test (at least one image "
            f"each), the rest to train; seed {seed}, so the same split every run")
    if "all" in parts:
        train, val, test = stratified_split(parts["all"], (val_fraction, test_fraction), seed)
        origin = f"{path.name}: class folders without train/val/test folders, so a stratified split was made: {rule}."
    elif "val" not in parts:
        train, val = stratified_split(parts["train"], (val_fraction,), seed)
        test = parts["test"]
        origin = (f"{path.name}: train/ and test/ folders as given; no val/ folder, so validation was carved from "
                  f"train/: {val_fraction:.0%} of each class (seed {seed}).")
    else:
        train, val, test = parts["train"], parts["val"], parts.get("test")
        origin = f"{path.name}: train/ and val/ folders as given"
        if test is None:
            train, test = stratified_split(parts["train"], (test_fraction,), seed)
            origin += f"; no test/ folder, so a test part was carved from train/: {test_fraction:.0%} of each class (seed {seed})"
        else:
            origin += ", and test/"
        origin += "."
    return Splits(train, test, val, origin + (f"\n{notes}" if notes else ""))


def describe_splits(splits: Splits) -> str:
    """Where the parts came from, images per class and part, the class balance, and how far accuracies
    measured on so few images can be trusted: with tens of images one photo moves accuracy by points."""
    from .train import difference_noise  # train imports data: imported here, when it is needed
    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    parts = {name: part for name, part in parts.items() if part is not None}
    classes = splits.train.classes
    counts = {name: part.class_counts().tolist() for name, part in parts.items()}
    width = max(len(c) for c in [*classes, "total"])
    lines = [splits.origin, f"{len(classes)} classes; images per class and part:",
             " " * width + "".join(f"{name:>8}" for name in parts)]
    lines += [f"{c:<{width}}" + "".join(f"{counts[name][i]:>8}" for name in parts) for i, c in enumerate(classes)]
    lines.append(f"{'total':<{width}}" + "".join(f"{len(part):>8}" for part in parts.values()))
    train_counts = counts["train"]
    largest, smallest = max(train_counts), min(train_counts)
    lines.append(("balance: every class has the same number of training images" if largest == smallest else
                  f"balance: the largest class has {largest / max(smallest, 1):.1f}x the training images of the "
                  f"smallest ({classes[train_counts.index(largest)]} {largest}, "
                  f"{classes[train_counts.index(smallest)]} {smallest})")
                 + f"; always guessing the largest class scores {largest / len(splits.train):.0%}.")
    for name in ("val", "test"):
        if name in parts:
            n = len(parts[name])
            lines.append(f"{name}: one image is {100 / n:.1f} accuracy points; an accuracy measured on {n} images is "
                         f"uncertain by up to ±{100 * accuracy_margin(n):.0f} points (95%), and two models scored on "
                         f"them differ beyond noise only by more than ±{100 * difference_noise(0.5, n):.0f} points "
                         "(the noise of a difference).")
    return "\n".join(lines)


def accuracy_margin(n: int, accuracy: float = 0.5) -> float:
    """Half-width of the 95% interval of an accuracy measured on n images (binomial; widest at 50%)."""
    return 1.96 * math.sqrt(accuracy * (1 - accuracy) / n)


def find_local_cifar10(root: Path) -> Path | None:
    """The CIFAR-10 copy in `root` that load_cifar10 would read, or None (course.py checks the same names)."""
    for name in LOCAL_CIFAR10_NAMES:
        if (root / name).exists():
            return root / name
    return None


def _download_cifar10(root: Path, download: bool | None) -> Path:
    where = (f"  - torchvision's cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/) in {root}\n"
             f"  - an ImageFolder copy (train/<class>/*.jpg, test/<class>/*.jpg) as {root / 'cifar10'} "
             f"or {root / 'cifar10-jpeg.tar.gz'}\n"
             f"  - or set {CIFAR10_ENV}=/path/to/either, or {config.DATA_DIR_ENV} to a folder holding one.")
    if download is None:
        download = not config.offline()
    if not download:
        raise DataError(f"CIFAR-10 was not found and downloading is off ({config.OFFLINE_ENV}=1). Put one of these in place:\n{where}")
    import torchvision

    try:
        for train in (True, False):
            torchvision.datasets.CIFAR10(str(root), train=train, download=True)
    except Exception as e:  # network errors come in many types
        raise DataError(f"Downloading CIFAR-10 failed ({type(e).__name__}: {e}). "
                        f"If this machine is offline, put one of these in place:\n{where}") from e
    return root / "cifar-10-batches-py"


def _cache_stem(path: Path) -> str:
    return path.name.replace(".tar.gz", "").replace(".tgz", "").replace(".zip", "")


def decoded_cache_file(path: Path, size: int) -> Path:
    """Where the decode of `path` at `size` px is cached; the source's fingerprint in the name invalidates it."""
    return config.data_dir() / "cache" / f"{_cache_stem(path)}-{size}px-v{_CACHE_VERSION}-{fingerprint(path)}.pt"


def _load_cached(path: Path, size: int, cache: bool, progress: bool,
                 expect: Callable[[list[str], list[str]], None] | None = None) -> tuple[dict[str, ImageData], str]:
    """The parts of a source by name (train, val, test, or all for class folders alone) and notes on
    conversions made while decoding, from the cache when it matches the source. `expect(parts, classes)`
    raises a DataError when the source is not what the caller needs: called on the names alone, before any
    image is decoded, and on a cache, so that nothing is cached of a source that cannot be used."""
    cache_file = None
    if cache:
        stem = _cache_stem(path)
        cache_file = decoded_cache_file(path, size)
        readable = cache_file if cache_file.exists() else _shared_cache(stem, size)
        if readable is not None:
            try:
                parts, notes = _read_cache(readable, size)
            except DamagedFileError as e:  # rebuilt, never trusted
                print(f"The decoded cache {readable} is damaged ({e}); "
                      f"{'deleting it and ' if readable == cache_file else ''}decoding {path} again to rebuild it.")
                cache_file.unlink(missing_ok=True)
            else:
                if expect is not None:
                    expect(list(parts), next(iter(parts.values())).classes)
                return parts, notes

    def before_decoding(part_names: list[str], classes: list[str], n_images: int):
        if expect is not None:
            expect(part_names, classes)
        if cache_file is not None:  # the cache's size is known now: a full disk is named before the decoding
            check_space(cache_file.parent, n_images * (3 * size * size + 8) + SAVE_OVERHEAD)

    parts, notes = _decode_source(path, size, progress, before_decoding)
    if cache_file is not None:
        for stale in cache_file.parent.glob(f"{glob.escape(stem)}-{size}px-*.pt"):
            stale.unlink(missing_ok=True)
        remove_abandoned_temporaries(cache_file.parent, f"{glob.escape(stem)}-{size}px-*.pt")  # of other versions too
        blob = {"classes": next(iter(parts.values())).classes, "notes": notes}
        for part, d in parts.items():
            blob.update({f"{part}_images": d.images, f"{part}_labels": d.labels})
        save_verified(blob, cache_file)
    return parts, notes


def _read_cache(file: Path, size: int) -> tuple[dict[str, ImageData], str]:
    """A decoded cache's parts, checked: its checksum, then shapes and label ranges (DamagedFileError)."""
    blob = load_verified(file, mmap=True)
    classes, notes = blob.get("classes"), blob.get("notes")
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)
            and isinstance(notes, str)):
        raise DamagedFileError("its class names or notes are missing")
    names = [part for part in _PARTS if f"{part}_images" in blob]
    if not names or len(blob) != 2 + 2 * len(names):
        raise DamagedFileError(f"it holds the entries {sorted(blob)}, not a decoded source's")
    parts = {}
    for part in names:
        pixels, labels = blob[f"{part}_images"], blob.get(f"{part}_labels")
        if not (isinstance(pixels, torch.Tensor) and isinstance(labels, torch.Tensor) and pixels.dtype == torch.uint8
                and tuple(pixels.shape[1:]) == (3, size, size) and len(pixels) > 0
                and labels.dtype == torch.long and labels.shape == (len(pixels),)):
            raise DamagedFileError(f"its {part} part is not {size}px uint8 images with one int64 label each")
        if labels.min() < 0 or labels.max() >= len(classes):
            raise DamagedFileError(f"its {part} labels are not all class numbers 0 to {len(classes) - 1}")
        parts[part] = ImageData(pixels, labels, classes)
    return parts, notes


def _shared_cache(stem: str, size: int) -> Path | None:
    """The shared data folder's decode of this source (config.shared_data_dir). It was made from the very copy
    that is given here under another path (a sandbox sees it mounted elsewhere), so the name, not the
    path's fingerprint, identifies it."""
    shared = config.shared_data_dir()
    found = sorted((shared / "cache").glob(f"{stem}-{size}px-v{_CACHE_VERSION}-*.pt")) if shared is not None else []
    return found[0] if len(found) == 1 else None


def _decode_source(path: Path, size: int, progress: bool,
                   before_decoding: Callable[[list[str], list[str], int], None]) -> tuple[dict[str, ImageData], str]:
    """The source's parts; `before_decoding(parts, classes, number of images)` is called as soon as they are
    known (for image files: from the names, before any pixel is decoded)."""
    try:
        if path.is_dir():
            if (path / "data_batch_1").exists():
                return _read_torchvision_batches(lambda name: open(path / name, "rb"), before_decoding), ""
            if (path / "cifar-10-batches-py" / "data_batch_1").exists():
                return _read_torchvision_batches(lambda name: open(path / "cifar-10-batches-py" / name, "rb"),
                                                 before_decoding), ""
            return _decode_image_files(_folder_files(path), size, progress, str(path), before_decoding)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _decode_image_files(_zip_files(archive), size, progress, str(path), before_decoding)
        if not tarfile.is_tarfile(path):
            raise DataError(f"{path} is neither a folder nor a readable .tar.gz or .zip archive. Re-download or re-copy it.")
        with tarfile.open(path, "r:*") as tar:
            names = tar.getnames()
            batches = [n for n in names if n.endswith("/data_batch_1") or n == "data_batch_1"]
            if batches:
                prefix = batches[0][: -len("data_batch_1")]
                return _read_torchvision_batches(lambda name: tar.extractfile(prefix + name), before_decoding), ""
            return _decode_image_files(_tar_files(tar), size, progress, str(path), before_decoding)
    except (DataError, NoSpaceError):
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, pickle.UnpicklingError, KeyError, ValueError,
            zlib.error) as e:
        raise DataError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}). "
                        "Delete it and download or copy it again.") from e


def _read_torchvision_batches(open_member, before_decoding) -> dict[str, ImageData]:
    """torchvision's CIFAR-10 format: pickled dicts of 10,000 flattened images each (no decoding to do)."""
    def read(names):
        images, labels = [], []
        for name in names:
            f = open_member(name)
            if f is None:
                raise DataError(f"{name} is missing from the torchvision-format CIFAR-10 copy.")
            with f:
                entry = pickle.load(f, encoding="latin1")
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry["labels"])
        return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long)

    with open_member("batches.meta") as f:
        classes = pickle.load(f, encoding="latin1")["label_names"]
    train, test = read([f"data_batch_{i}" for i in range(1, 6)]), read(["test_batch"])
    before_decoding(["train", "test"], classes, len(train[1]) + len(test[1]))
    return {"train": ImageData(*train, classes), "test": ImageData(*test, classes)}


# ------------------------------------------------------------------------------ image folder layouts
_PARTS = ("train", "val", "test", "all")  # "all": class folders alone, split after loading
SPLIT_FOLDERS = ("train", "val", "test")
_SYSTEM_FILES = {"thumbs.db", "desktop.ini", "__macosx"}


@dataclass
class _Listing:
    """A source's paths ('/'-separated, relative; folders end in '/') and a reader of the named files' bytes."""

    paths: list[str]
    read: Callable[[set[str]], Iterator[tuple[str, bytes]]]


def _folder_files(root: Path) -> _Listing:
    paths = sorted(p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in root.rglob("*"))
    return _Listing(paths, lambda wanted: ((name, (root / name).read_bytes()) for name in sorted(wanted)))


def _tar_files(tar: tarfile.TarFile) -> _Listing:
    members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
    name = {id(m): m.name.removeprefix("./") + ("/" if m.isdir() else "") for m in members}

    def read(wanted):  # in archive order: a .tar.gz is read once, front to back
        return ((name[id(m)], tar.extractfile(m).read()) for m in members if name[id(m)] in wanted)
    return _Listing([name[id(m)] for m in members], read)


def _zip_files(archive: zipfile.ZipFile) -> _Listing:
    return _Listing(archive.namelist(), lambda wanted: ((name, archive.read(name)) for name in sorted(wanted)))


def _listed(paths: list[str], limit: int = 5) -> str:
    return ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _image_layout(paths: list[str], where: str) -> dict[str, dict[str, list[str]]]:
    """part -> class -> image paths, from names alone; a layout that cannot be trained on is a DataError
    that says what is wrong and how to fix it."""
    files, folders = [], set()
    for p in paths:
        names = [x for x in p.split("/") if x]
        parts = tuple(unicodedata.normalize("NFC", x) for x in names)  # a zip made on macOS spells é as e + ´
        if not parts or any(x.startswith(".") or x.lower() in _SYSTEM_FILES for x in parts):
            continue  # hidden and system files (.DS_Store, __MACOSX/, Thumbs.db) are not data
        (folders.add(parts) if p.endswith("/") else files.append((parts, "/".join(names))))
    expected = f"Expected {LAYOUTS}, e.g. train/<class>/*.jpg and val/<class>/*.jpg."
    if not files:
        raise DataError(f"{where} holds no files. {expected}")
    strip = 0  # one folder around everything (an archive's top folder) is not a class or a split
    while (all(len(f) >= strip + 3 for f, _ in files) and len({f[strip] for f, _ in files}) == 1
           and files[0][0][strip] not in SPLIT_FOLDERS):
        strip += 1
    files = [(f[strip:], full) for f, full in files]
    folders = {d[strip:] for d in folders if len(d) > strip}
    not_images = [full for f, full in files if Path(f[-1]).suffix.lower() not in IMAGE_SUFFIXES]
    if not_images:
        raise DataError(f"{where}: {len(not_images)} file(s) are not images: {_listed(not_images)}. Only "
                        f"{' '.join(sorted(IMAGE_SUFFIXES))} files are read: move the others out of the folder.")
    top = {f[0] for f, _ in files if len(f) > 1} | {d[0] for d in folders}
    splits = sorted(top & set(SPLIT_FOLDERS), key=SPLIT_FOLDERS.index)
    if splits and top - set(splits):
        raise DataError(f"{where} mixes split folders ({', '.join(s + '/' for s in splits)}) with other folders "
                        f"({', '.join(sorted(d + '/' for d in top - set(splits)))}). Put every class folder inside "
                        "train/ (and val/ or test/), or use class folders alone and let a split be made.")
    depth = 3 if splits else 2
    stray = [full for f, full in files if len(f) != depth]
    if stray:
        place = "<split>/<class>/<image>" if splits else "<class>/<image>"
        raise DataError(f"{where}: {len(stray)} image(s) are not directly in a class folder ({place}): "
                        f"{_listed(stray)}. Move each into the folder named after its class.")
    if splits and "train" not in splits:
        raise DataError(f"{where} has {', '.join(s + '/' for s in splits)} but no train/ folder. "
                        "Add train/<class>/ with the images to learn from.")
    if splits == ["train"]:
        raise DataError(f"{where} has train/ but neither val/ nor test/. Add val/<class>/ with held-out images, "
                        "or move the class folders out of train/ to have a stratified train/val/test split made.")
    layout = {part: {} for part in (splits or ["all"])}
    for d in folders:
        if len(d) == depth - 1:
            layout[d[0] if splits else "all"].setdefault(d[-1], [])
    for f, full in files:
        layout[f[0] if splits else "all"].setdefault(f[-2], []).append(full)
    classes = sorted({c for per_class in layout.values() for c in per_class})
    for part, per_class in layout.items():
        prefix = f"{part}/" if splits else ""
        for c in classes:
            if c not in per_class:
                having = [f"{p}/" for p in layout if c in layout[p]]
                raise DataError(f"{where}: class {c!r} is in {', '.join(having)} but has no folder in {part}/. "
                                f"Every split needs the same class folders: add {part}/{c}/ with some of its "
                                f"images, or remove {c}/ from {', '.join(having)}.")
            if not per_class[c]:
                raise DataError(f"{where}: {prefix}{c}/ holds no images. Add at least one image of {c}, "
                                "or remove the folder.")
    if len(classes) < 2:
        raise DataError(f"{where} has only one class ({classes[0]!r}): a classifier needs at least two. "
                        "Add a folder of images for each other class beside it.")
    return layout


def _pixel_kind(blob: bytes, size: int) -> str:
    """What an image file holds, from its header only: 'rgb', a conversion to make, or 'unreadable: why'."""
    try:
        with images.open_photo(io.BytesIO(blob), size) as img:
            return images.conversion(img) or "rgb"
    except (OSError, SyntaxError, ValueError) as e:
        return f"unreadable: {e}"


def _decode_bytes(blob: bytes, size: int) -> torch.Tensor:
    """Encoded image -> uint8 (3, size, size), as images.fit_photo prepares it."""
    try:
        with images.open_photo(io.BytesIO(blob), size) as img:
            return torch.from_numpy(np.asarray(images.fit_photo(img, size)).copy()).permute(2, 0, 1)
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(str(e)) from e


def decode_image_file(path: str | Path, size: int = 32) -> torch.Tensor:
    """One image file of any size as uint8 (3, size, size), fitted the way image folders are."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is not a file. Give the path of a photo (.jpg, .png, ...).")
    try:
        return _decode_bytes(path.read_bytes(), size)
    except DataError as e:
        raise DataError(f"{path} is not a readable image ({e}). Give another photo, or a copy of it saved as .jpg "
                        "or .png.") from e


def _decode_image_files(listing: _Listing, size: int, progress: bool, where: str,
                        before_decoding) -> tuple[dict[str, ImageData], str]:
    """Layout from names, then every file's header, then the pixels: each step fails before the next starts."""
    from tqdm.auto import tqdm

    layout = _image_layout(listing.paths, where)
    place = {full: (part, cls) for part, per_class in layout.items() for cls, paths in per_class.items() for full in paths}
    before_decoding(list(layout), sorted({cls for _, cls in place.values()}), len(place))
    blobs, unreadable, converted = {}, [], {}
    for full, blob in listing.read(set(place)):
        kind = _pixel_kind(blob, size)
        if kind.startswith("unreadable"):
            unreadable.append(f"{full} ({kind.removeprefix('unreadable: ')})")
        elif kind != "rgb":
            converted.setdefault(kind, []).append(full)
        blobs[full] = blob
    if unreadable:
        raise DataError(f"{where}: {len(unreadable)} file(s) are not readable images: {_listed(unreadable, 3)}. "
                        "Remove or replace them (a file that no image viewer opens is damaged, or not an image).")
    notes = "; ".join(f"{len(paths)} {kind}, e.g. {paths[0]}" for kind, paths in converted.items())
    classes = sorted({cls for _, cls in place.values()})
    records = {part: [] for part in layout}
    for full in tqdm(sorted(blobs, key=lambda f: (place[f][1], f)), desc=f"decoding {Path(where).name}", unit=" img",
                     disable=not progress, mininterval=1.0):
        try:
            pixels = _decode_bytes(blobs.pop(full), size)
        except DataError as e:
            raise DataError(f"{where}: {full} is not a readable image ({e}). Remove or replace it.") from e
        part, cls = place[full]
        records[part].append((classes.index(cls), pixels))
    parts = {part: ImageData(torch.stack([p for _, p in recs]), torch.tensor([c for c, _ in recs], dtype=torch.long),
                             classes) for part, recs in records.items()}
    return parts, (f"Converted to RGB: {notes}." if notes else "")


# ------------------------------------------------------------------------------- splits, subsets
def train_val_split(data: ImageData, n_val: int = 5000, seed: int = 0) -> tuple[ImageData, ImageData]:
    """A stratified validation set carved from the training set (the test set is never for selection)."""
    if not 0 < n_val < len(data):
        raise ValueError(f"n_val must be between 1 and {len(data) - 1}, got {n_val}")
    gen = torch.Generator().manual_seed(seed)
    counts = data.class_counts().tolist()
    exact = [n_val * c / len(data) for c in counts]
    take = [math.floor(x) for x in exact]
    for i in sorted(range(len(counts)), key=lambda i: exact[i] - take[i], reverse=True)[: n_val - sum(take)]:
        take[i] += 1
    val_idx, train_idx = [], []
    for c, k in enumerate(take):
        idx = torch.nonzero(data.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        val_idx.append(idx[:k])
        train_idx.append(idx[k:])
    return data.subset(torch.cat(train_idx).sort().values), data.subset(torch.cat(val_idx).sort().values)


def stratified_split(data: ImageData, fractions: Sequence[float], seed: int = 0) -> tuple[ImageData, ...]:
    """(train, one part per fraction): each class divided in the same proportions, rounded, and at least one
    image of every class in every part, so that a tiny dataset's every class is still validated and tested."""
    if not fractions or any(f <= 0 for f in fractions) or sum(fractions) >= 1:
        raise ValueError(f"fractions must be positive and sum to less than 1 (the rest trains), got {fractions}")
    gen = torch.Generator().manual_seed(seed)
    chosen = [[] for _ in range(len(fractions) + 1)]
    for c, name in enumerate(data.classes):
        idx = torch.nonzero(data.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        sizes = [max(1, round(len(idx) * f)) for f in fractions]
        if len(idx) - sum(sizes) < 1:
            raise DataError(f"class {name!r} has {len(idx)} image(s): a split into train and {len(fractions)} "
                            f"held-out part(s) needs at least {len(fractions) + 1}. Add images of {name}, "
                            "or give train/ and val/ folders yourself.")
        start = 0
        for part, k in zip(chosen[1:], sizes):
            part.append(idx[start:start + k])
            start += k
        chosen[0].append(idx[start:])
    return tuple(data.subset(torch.cat(part).sort().values) for part in chosen)


COURSE_VAL_SIZE = 5000  # images of CIFAR-10's official training set held out for validation


def course_split(train: ImageData) -> tuple[ImageData, ImageData]:
    """The course's one fixed split of CIFAR-10's 50,000 training images: 45,000 to train on (pretraining
    the source model included) and 5,000 to choose with. Every lesson uses it, so no validation image
    was ever seen in training, by the source model or by a lesson's model."""
    return train_val_split(train, n_val=COURSE_VAL_SIZE, seed=0)  # read at call time (tests shrink it)


def per_class(data: ImageData, n: int, seed: int = 0) -> ImageData:
    """n images of every class (few-label experiments), the same ones for the same seed."""
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c, name in enumerate(data.classes):
        idx = torch.nonzero(data.labels == c).flatten()
        if len(idx) < n:
            raise ValueError(f"class {name!r} has only {len(idx)} images, fewer than the {n} asked for")
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:n]])
    return data.subset(torch.cat(chosen).sort().values)


def select_classes(data: ImageData, names: Sequence[str]) -> ImageData:
    """Only the named classes, relabelled 0..k-1 in the order given."""
    missing = [n for n in names if n not in data.classes]
    if missing:
        raise ValueError(f"unknown classes {missing}; this dataset has {data.classes}")
    old = torch.tensor([data.classes.index(n) for n in names])
    keep = torch.isin(data.labels, old)
    remap = torch.full((len(data.classes),), -1, dtype=torch.long)
    remap[old] = torch.arange(len(names))
    return ImageData(data.images[keep], remap[data.labels[keep]], list(names), data.index[keep])


# ---------------------------------------------------------------------------------------- batches
def normalization(name_or_stats) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """'cifar', 'imagenet', a (mean, std) pair, or None for plain [0, 1] pixels."""
    if name_or_stats is None:
        return None
    if isinstance(name_or_stats, str):
        if name_or_stats not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {name_or_stats!r}; use one of {sorted(NORMALIZATIONS)} or (mean, std)")
        return NORMALIZATIONS[name_or_stats]
    mean, std = name_or_stats
    return tuple(mean), tuple(std)


def random_crop_flip(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to `pad` pixels (reflect padding) and random horizontal flip, batched."""
    b, _, h, w = x.shape
    if pad:
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        x = padded[torch.arange(b, device=x.device)[:, None, None, None],
                   torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class TensorBatches:
    """Mini-batches of (x, y) tensors kept on one device: shuffled with a seeded generator.

    Iterating twice gives two different shuffles; the same `seed` gives the same sequence of epochs.
    Used as is for cached features; Batches adds image augmentation on top.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256, *, shuffle: bool = False,
                 drop_last: bool = False, device=None, seed: int = 0, steps: int | None = None):
        if len(x) != len(y):
            raise ValueError(f"{len(x)} inputs for {len(y)} labels")
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        # batches per iteration when given: full batches drawn from consecutive shuffles, so an "epoch" of a
        # tiny set can be longer than one pass, and sets of any size get the same number of steps
        self.steps = steps
        self.device = torch.device(device) if device is not None else x.device
        self.generator = torch.Generator().manual_seed(seed)
        self._x, self._y = x.to(self.device), y.to(self.device)
        self.rank, self.world_size, self.equal_shards = 0, 1, True

    def shard(self, rank: int, world_size: int, *, equal: bool) -> "TensorBatches":
        """From now on yield only rank `rank`'s part of every epoch (in place): every rank draws the same
        seeded permutation and takes every world_size-th image of it from position `rank`, so the parts are
        disjoint, together they are the epoch, and the images of one step over all ranks are exactly the
        batch a single process takes with batch_size * world_size. equal=True (training): the permutation's
        last n % world_size images are left out (a different few each epoch when shuffled), so that every
        rank takes the same number of steps, which DDP needs; equal=False (evaluation): every image once, the
        parts differing by at most one image. The generator stays in step on all ranks, so the ranks draw
        the same crops and flips, each for its own images."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of the {world_size} ranks (0 to {world_size - 1})")
        if len(self._y) < world_size:
            raise ValueError(f"{len(self._y)} images cannot be split across {world_size} ranks: every rank needs at "
                             "least one; use fewer processes or more data")
        self.rank, self.world_size, self.equal_shards = rank, world_size, equal
        return self

    def _images_per_pass(self) -> int:
        n = len(self._y)
        return n // self.world_size if self.equal_shards else len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        if self.steps is not None:
            return self.steps
        n = self._images_per_pass()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def to(self, device, channels_last: bool | None = None) -> "TensorBatches":
        """Move the data to `device` once (in place, like nn.Module.to)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device != self._x.device:
            self._x, self._y = self._x.to(device), self._y.to(device)
            self.device = device
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _pass_order(self) -> torch.Tensor:
        """This rank's indices for one pass over the data (all of them in a single process)."""
        n = len(self._y)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        kept = n - n % self.world_size if self.equal_shards else n
        return order[:kept][self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        passes = 1 if self.steps is None else math.ceil(self.steps * self.batch_size / self._images_per_pass())
        order = torch.cat([self._pass_order() for _ in range(passes)]).to(self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.transform(self._x[idx]), self._y[idx]


class Batches(TensorBatches):
    """Mini-batches of an ImageData on a device: shuffle, augment, resize and normalize on tensors.

    Images are moved to the device once (uint8); each batch is converted, augmented (random crop with
    reflect padding, horizontal flip), resized (`size`, e.g. 32 -> 64/128/224) and normalized there.
    """

    def __init__(self, data: ImageData, batch_size: int = 256, *, shuffle: bool = False,
                 drop_last: bool = False, augment: bool = False, crop_padding: int = 4,
                 normalize="cifar", size: int | None = None, device=None, seed: int = 0,
                 channels_last: bool = False, steps: int | None = None):
        super().__init__(data.images, data.labels, batch_size, shuffle=shuffle, drop_last=drop_last,
                         device=device or "cpu", seed=seed, steps=steps)
        self.data = data
        self.augment, self.crop_padding, self.size = augment, crop_padding, size
        self.channels_last = channels_last
        self.stats = normalization(normalize)

    @property
    def resolution(self) -> int:
        return self.size or self.data.resolution

    def to(self, device, channels_last: bool | None = None) -> "Batches":
        super().to(device)
        if channels_last is not None:
            self.channels_last = channels_last
        return self

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) on the device -> the float batch the model sees."""
        x = images.float().div_(255)
        if self.augment:
            x = random_crop_flip(x, self.crop_padding, self.generator)
        if self.size is not None and self.size != x.shape[-1]:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=False)
        if self.stats is not None:
            mean = torch.tensor(self.stats[0], device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.stats[1], device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


# ------------------------------------------------------------------------------ torch Dataset view
class TorchDataset(torch.utils.data.Dataset):
    """The same data as a standard map-style Dataset: a float CHW tensor in [0, 1], or a PIL image.

    For learners who want torchvision transforms and a DataLoader (slower: work is per sample).
    """

    def __init__(self, data: ImageData, transform=None, pil: bool = False):
        self.data, self.transform, self.pil = data, transform, pil

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        img = self.data.images[i]
        if self.pil:
            from PIL import Image
            img = Image.fromarray(img.permute(1, 2, 0).numpy())
        else:
            img = img.float() / 255
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.data.labels[i])


def data_loader(data: ImageData, batch_size: int = 128, *, shuffle: bool = False, transform=None,
                pil: bool = False, num_workers: int = 0, seed: int = 0) -> torch.utils.data.DataLoader:
    """A standard DataLoader over TorchDataset, seeded so reruns shuffle the same way."""
    return torch.utils.data.DataLoader(TorchDataset(data, transform, pil), batch_size=batch_size,
                                       shuffle=shuffle, num_workers=num_workers,
                                       generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------- synthetic
def synthetic_images(n_per_class: int = 16, num_classes: int = 4, size: int = 32, seed: int = 0,
                     noise: float = 40.0) -> ImageData:
    """A tiny, deterministic, learnable dataset with CIFAR shapes, for unit tests.

    Class c is a tint plus stripes at its own angle, with pixel noise; generated on the fly.
    """
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    images, labels = [], []
    for c in range(num_classes):
        angle = math.pi * c / num_classes
        stripes = torch.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 0.6)
        tint = torch.tensor([math.cos(2 * math.pi * c / num_classes), math.sin(2 * math.pi * c / num_classes), 0.0])
        base = 128 + 60 * stripes[None] + 40 * tint[:, None, None]
        shift = torch.randn(n_per_class, 3, 1, 1, generator=gen) * 10
        img = base[None] + shift + torch.randn(n_per_class, 3, size, size, generator=gen) * noise
        images.append(img.clamp(0, 255).round().to(torch.uint8))
        labels.append(torch.full((n_per_class,), c, dtype=torch.long))
    return ImageData(torch.cat(images), torch.cat(labels), [f"class{c}" for c in range(num_classes)])


def synthetic_splits(n_train: int = 32, n_test: int = 16, num_classes: int = 4, size: int = 32, seed: int = 0) -> Splits:
    """Train and test parts of the synthetic dataset, drawn with different seeds."""
    return Splits(synthetic_images(n_train, num_classes, size, seed),
                  synthetic_images(n_test, num_classes, size, seed + 1000))


def cifar10_status() -> str:
    """Where CIFAR-10 would come from right now, without loading or downloading anything."""
    given = os.environ.get(CIFAR10_ENV)
    if given:
        ok = Path(given).expanduser().exists()
        return f"CIFAR-10: {CIFAR10_ENV}={given} ({'found' if ok else 'MISSING: fix or unset it'})"
    local = find_local_cifar10(config.data_dir())
    if local is not None:
        return f"CIFAR-10: found {local}"
    root = config.data_dir()
    if config.offline():
        return (f"CIFAR-10: not found, and downloads are off ({config.OFFLINE_ENV}=1). Put cifar-10-python.tar.gz "
                f"or an ImageFolder copy (cifar10/ or cifar10-jpeg.tar.gz) in {root}, or set {CIFAR10_ENV}.")
    return f"CIFAR-10: not on disk yet; the first lesson that needs it downloads it (about 170 MB) into {root}."
