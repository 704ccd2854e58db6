"""The model to take with you: one torch.export file (.pt2) that runs with torch and Pillow alone, no course_lib.

The file holds the network with its input preparation built in (resize to the input size, normalization),
and, as an extra file inside it, the class names and how a photo is fitted before it goes in, so that
wherever it runs a photo is prepared exactly as the training images were.
"""
from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

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
    return atomic_write(path, lambda tmp: tmp.write_bytes(archive.getvalue()))


# What a receiver runs: torch and Pillow only. Kept as text so the lesson can show it and run it as is.
STANDALONE_PREDICT = '''\
import json, sys
import torch
from PIL import Image, ImageOps

def load(model_path):
    """The exported model and what it says about its input."""
    extra = {"course_model.json": ""}
    model = torch.export.load(model_path, extra_files=extra).module()
    return model, json.loads(extra["course_model.json"])

def photo_pixels(path, size):
    """A photo as (1, 3, size, size) pixels in [0, 1], fitted as the training images were."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img.convert("RGBA"))
        img = ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BICUBIC)
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.view(size, size, 3).permute(2, 0, 1).unsqueeze(0).float() / 255

def top_classes(model_path, photo_paths, top=3):
    model, meta = load(model_path)
    out = []
    with torch.no_grad():
        for path in photo_paths:
            probs = model(photo_pixels(path, meta["size"])).softmax(1)[0]
            values, idx = probs.topk(min(top, len(meta["classes"])))
            out.append([[meta["classes"][i], float(v)] for v, i in zip(values.tolist(), idx.tolist())])
    return out

if __name__ == "__main__":
    print(json.dumps(top_classes(sys.argv[1], sys.argv[2:])))
'''


def read_meta(path: str | Path) -> dict:
    """The class names and input description stored in an exported model."""
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
    if done.returncode != 0:
        raise RuntimeError(f"the exported model failed in a fresh process:\n{done.stderr[-2000:]}")
    return [[(name, p) for name, p in top] for top in json.loads(done.stdout)]
