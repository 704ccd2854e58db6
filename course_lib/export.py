"""The model to take with you: one torch.export file (.pt2) that runs with torch and Pillow alone, no course_lib.

The file holds the network with its input preparation built in (resize to the input size, normalization),
and, as an extra file inside it, the class names and how a photo is fitted before it goes in, so that
wherever it runs a photo is prepared exactly as the training images were.
"""
from __future__ import annotations

import copy
import inspect
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import images
from .storage import atomic_write

META_FILE = "course_model.json"  # the extra file inside the exported archive


class PreparedInput(nn.Module):
    """A network that takes [0, 1] pixels at the photo size and does the rest itself: the resize to its
    input size and the normalization its weights expect (as data.Batches does for training)."""

    def __init__(self, network: nn.Module, size: int, input_size: int, mean, std):
        super().__init__()
        self.network, self.input_size, self.resize = network, input_size, size != input_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.resize:
            pixels = F.interpolate(pixels, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False, antialias=False)
        return self.network((pixels - self.mean) / self.std)


def export_model(model: nn.Module, path: str | Path, *, classes, size: int, input_size: int | None = None,
                 mean, std) -> Path:
    """Write `model` (left as it is) as a torch.export file at `path`, atomically: a half-written file never
    replaces a good one. `size` is the side photos are fitted to (shorter side, centre crop), as the
    training images were; `input_size` the network's (default: `size`)."""
    path = Path(path)
    if path.suffix != ".pt2":
        raise ValueError(f"{path}: give the exported model a .pt2 name (torch.export's archive)")
    input_size = input_size or size
    wrapped = PreparedInput(copy.deepcopy(model).cpu().float(), size, input_size, mean, std).eval()
    wrapped.to(memory_format=torch.contiguous_format)
    batch = torch.export.Dim("batch", min=1, max=4096)
    exported = torch.export.export(wrapped, (torch.rand(2, 3, size, size),), dynamic_shapes=({0: batch},))
    meta = {"classes": list(classes), "size": size, "input_size": input_size, "mean": list(mean), "std": list(std),
            "input": "RGB pixels in [0, 1], (N, 3, size, size): the photo upright (EXIF), transparency on white, "
                     "shorter side fitted to size with bicubic resampling, then centre-cropped",
            "output": "logits, one per class in the order of classes"}
    archive = io.BytesIO()  # torch.export wants a .pt2 name or a buffer, and atomic_write's temporary file has neither
    torch.export.save(exported, archive, extra_files={META_FILE: json.dumps(meta)})
    return atomic_write(path, lambda tmp: tmp.write_bytes(archive.getvalue()), size=archive.getbuffer().nbytes)


def check_archive(path):
    """ValueError, naming the file and the fix, unless `path` is a whole zip archive: every entry's CRC is
    checked, so that a file cut short or with overwritten bytes is named before torch reads any of it."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except Exception as e:  # missing, not a zip, a broken directory: many types
        why = f"{type(e).__name__}: {e}"
    else:
        if damaged is None:
            return
        why = f"the bytes of {damaged} are not those written"
    raise ValueError(f"{path} is not a readable exported model ({why}): it is damaged, cut short, or not a .pt2 "
                     "file written by export_model. Copy it again, or export the model again.")


# What a receiver runs: torch and Pillow only. Kept as text so the lesson can show it and run it as is; a photo is
# opened and fitted by the very functions that prepared the training images (images.py, Pillow alone).
STANDALONE_PREDICT = ("""\
import json, sys, warnings, zipfile
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

""" + f"SIXTEEN_BIT_MODES = {images.SIXTEEN_BIT_MODES!r}\nTRANSPARENT_MODES = {images.TRANSPARENT_MODES!r}\n\n\n"
    + inspect.getsource(images.open_photo) + "\n\n" + inspect.getsource(images.fit_photo) + "\n\n"
    + inspect.getsource(check_archive) + '''

def load(model_path):
    """The exported model and what it says about its input."""
    try:
        check_archive(model_path)
    except ValueError as e:
        sys.exit(str(e))
    extra = {"course_model.json": ""}
    model = torch.export.load(model_path, extra_files=extra).module()
    return model, json.loads(extra["course_model.json"])

def photo_pixels(path, size):
    """A photo as (1, 3, size, size) pixels in [0, 1], fitted as the training images were."""
    with open_photo(path, size) as img:
        img = fit_photo(img, size)
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.view(size, size, 3).permute(2, 0, 1).unsqueeze(0).float() / 255

def top_classes(model_path, photo_paths, top=3):
    """Per photo, the top classes and their probabilities; [] for a photo that cannot be read (said on stderr)."""
    model, meta = load(model_path)
    out, unreadable = [], []
    with torch.no_grad():
        for path in photo_paths:
            try:
                pixels = photo_pixels(path, meta["size"])
            except (OSError, SyntaxError, ValueError) as e:
                unreadable.append(f"{path} ({e})")
                out.append([])
                continue
            probs = model(pixels).softmax(1)[0]
            values, idx = probs.topk(min(top, len(meta["classes"])))
            out.append([[meta["classes"][i], float(v)] for v, i in zip(values.tolist(), idx.tolist())])
    if unreadable:
        print(f"Not predicted, not readable images: {'; '.join(unreadable)}. Remove or replace them.", file=sys.stderr)
    return out

if __name__ == "__main__":
    print(json.dumps(top_classes(sys.argv[1], sys.argv[2:])))
''')


def read_meta(path: str | Path) -> dict:
    """The class names and input description stored in an exported model."""
    check_archive(path)
    extra = {META_FILE: ""}
    torch.export.load(path, extra_files=extra)
    if not extra[META_FILE]:
        raise ValueError(f"{path} is a torch.export file without {META_FILE}: it was not written by export_model")
    return json.loads(extra[META_FILE])


def predict_in_fresh_process(model_path: str | Path, photos, timeout: float = 120) -> list[list[tuple[str, float]]]:
    """Top-3 (class, probability) per photo, computed by STANDALONE_PREDICT in a new Python process that
    where importing course_lib fails (however it is installed): proof that the file travels alone."""
    code = "import sys\nsys.modules['course_lib'] = None  # any import of it now fails\n" + STANDALONE_PREDICT
    done = subprocess.run([sys.executable, "-I", "-c", code, str(model_path), *map(str, photos)],
                          capture_output=True, text=True, timeout=timeout, cwd=Path(model_path).resolve().parent)
    if done.returncode != 0:  # its last line says what went wrong; the traceback above it is no help to a learner
        raise RuntimeError(f"the exported model failed in a fresh process:\n{done.stderr.strip().splitlines()[-1]}")
    if done.stderr:
        print(done.stderr.strip())
    return [[(name, p) for name, p in top] for top in json.loads(done.stdout)]
