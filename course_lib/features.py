"""Features of a frozen backbone, computed once and cached (in memory and on disk).

A frozen backbone gives the same output for the same image every epoch, so a linear probe (or training
only the stages after the cut) needs one pass over the data, not one per epoch.
"""
from __future__ import annotations

import hashlib
from contextlib import nullcontext

import torch
import torch.nn as nn

from . import config
from .data import Batches, ImageData, TensorBatches
from .models import body_upto, freeze, weights_fingerprint
from .storage import DamagedFileError, load_verified, save_verified
from .train import History, autocast_for, fit, prepare

_MEMORY: dict[str, torch.Tensor] = {}
_MEMORY_LIMIT = 8


def data_fingerprint(data: ImageData) -> str:
    """A content hash of the images and labels (about 0.2 s for all of CIFAR-10)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(data.images.contiguous().numpy().tobytes())
    h.update(data.labels.numpy().tobytes())
    return h.hexdigest()


def feature_key(model: nn.Module, data: ImageData, upto: str, size: int | None, normalize, precision: str = "fp32") -> str:
    """What the cached features depend on: the frozen part's weights, the data, resolution, cut, normalization
    and the precision they were computed in."""
    body = body_upto(model, upto)
    parts = [weights_fingerprint(body), data_fingerprint(data), upto, str(size or data.resolution), repr(normalize)]
    parts += [precision] if precision != "fp32" else []  # fp32 keys as before: existing caches stay valid
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


@torch.no_grad()
def extract_features(model: nn.Module, data: ImageData, upto: str = "layer4", *, size: int | None = None,
                     normalize="cifar", batch_size: int = 256, device=None, cache: bool = True,
                     progress: bool = True) -> torch.Tensor:
    """The output of the network up to stage `upto` for every image (pooled 512-d vectors at layer4).

    The frozen part runs in eval mode (BatchNorm uses its running statistics), without augmentation, in bf16
    where that is faster (GPUs; CPUs with bf16 instructions: train.cpu_bf16_faster). Results are cached in memory
    and under data/cache/features/, keyed by feature_key.
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else config.get_device()
    autocast, _ = autocast_for(device)
    precision = "fp32" if isinstance(autocast, nullcontext) else str(autocast.fast_dtype).removeprefix("torch.")
    key = feature_key(model, data, upto, size, normalize, precision) if cache else None
    path = config.data_dir() / "cache" / "features" / f"{upto}-{key}.pt" if cache else None
    if cache and key in _MEMORY:
        return _MEMORY[key]
    if cache and path.exists():
        try:
            feats = load_verified(path)["features"]
            _remember(key, feats)
            return feats
        except (DamagedFileError, KeyError) as e:
            print(f"The feature cache {path} is damaged ({e}); deleting it and computing the features again to "
                  "rebuild it.")
            path.unlink(missing_ok=True)
    body = body_upto(model, upto)
    was_training = model.training
    _, channels_last = prepare(body, device)
    body.eval()
    batches = Batches(data, batch_size, normalize=normalize, size=size, device=device, channels_last=channels_last)
    out = []
    # leave=True: a notebook bar closed at once (a small set, a fast device) is closed before JupyterLab draws
    # it, and the widget manager then logs "widget model not found"
    for x, _ in tqdm(batches, desc=f"features up to {upto}", disable=not progress, leave=True):
        with autocast:
            out.append(body(x).float().cpu())
    model.train(was_training)
    feats = torch.cat(out)
    if cache:
        save_verified({"features": feats}, path)
        _remember(key, feats)
    return feats


def fit_head(model: nn.Module, train_data: ImageData, val_data: ImageData | None = None, *, epochs: int,
             lr: float, batch_size: int = 256, normalize="cifar", size: int | None = None, seed: int = 0,
             steps: int | None = None, device=None, progress: bool = True, desc: str = "head on cached features") -> History:
    """Freeze everything but `model.fc` (BatchNorm included) and train the head on cached features of the
    frozen backbone: one backbone pass, then milliseconds per epoch. The model is left frozen. `steps`:
    batches per epoch (to give the head as many steps as other strategies get; default one pass)."""
    freeze(model, "layer4")
    kw = dict(normalize=normalize, size=size, device=device, progress=progress)
    train_batches = TensorBatches(extract_features(model, train_data, **kw), train_data.labels,
                                  min(batch_size, len(train_data)), shuffle=True, seed=seed, steps=steps)
    val_batches = None
    if val_data is not None:
        val_batches = TensorBatches(extract_features(model, val_data, **kw), val_data.labels, 1000)
    return fit(model.fc, train_batches, val_batches, epochs=epochs, lr=lr, device=device, progress=progress, desc=desc)


def _remember(key: str, feats: torch.Tensor) -> None:
    if len(_MEMORY) >= _MEMORY_LIMIT:
        _MEMORY.pop(next(iter(_MEMORY)))
    _MEMORY[key] = feats


def clear_memory_cache() -> None:
    _MEMORY.clear()
