"""CIFAR-10 classified by an ImageNet classifier that never saw CIFAR-10: each CIFAR-10 class is the sum of the
probabilities of the ImageNet classes that are kinds of it (dog breeds for dog, liners and container ships for
ship, ...). Far above chance, it shows that the weights hold ImageNet's knowledge, not noise; the lesson shows it
before anything is trained.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models import ResNet18_Weights

from . import data
from .train import evaluate

IMAGENET_CLASSES = tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])  # the 1000 names, in order
# ImageNet classes (by name, or index ranges of WordNet's contiguous groups) that are kinds of each CIFAR-10
# class. ImageNet has no deer: its antelopes stand in.
_KINDS = {
    "airplane": ("airliner", "warplane", "wing"),
    "automobile": ("beach wagon", "cab", "convertible", "jeep", "limousine", "minivan", "racer", "sports car",
                   "grille", "car wheel"),
    "bird": (range(7, 25), range(80, 101), range(127, 147)),
    "cat": ("tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"),
    "deer": ("hartebeest", "impala", "gazelle"),
    "dog": (range(151, 269),),
    "frog": ("bullfrog", "tree frog", "tailed frog"),
    "horse": ("sorrel", "horse cart"),
    "ship": ("container ship", "liner", "fireboat", "lifeboat", "pirate", "schooner", "aircraft carrier",
             "catamaran", "trimaran", "yawl", "speedboat", "submarine", "wreck"),
    "truck": ("fire engine", "garbage truck", "moving van", "pickup", "police van", "tow truck", "trailer truck"),
}


def imagenet_indices(cifar_class: str) -> list[int]:
    """The ImageNet class indices counted as `cifar_class`."""
    out = []
    for kind in _KINDS[cifar_class]:
        out += list(kind) if isinstance(kind, range) else [IMAGENET_CLASSES.index(kind)]
    return out


def cifar_from_imagenet(probabilities: torch.Tensor, classes) -> torch.Tensor:
    """(N, len(classes)) probabilities of `classes` (CIFAR-10 names) from (N, 1000) ImageNet probabilities."""
    return torch.stack([probabilities[:, imagenet_indices(c)].sum(1) for c in classes], 1)


@torch.no_grad()
def zero_shot_accuracy(model: nn.Module, images: data.ImageData, *, size: int, normalize, device=None) -> dict:
    """Accuracy of an ImageNet classifier (its 1000-way head kept) on CIFAR-10 images, with no training.

    Returns accuracy, chance (1 / classes) and per-class accuracy."""
    ev = evaluate(model, data.Batches(images, 100, normalize=normalize, size=size, device=device), device=device)
    predicted = cifar_from_imagenet(ev.probabilities, images.classes).argmax(1)
    right = predicted == images.labels
    per_class = {c: right[images.labels == i].float().mean().item() for i, c in enumerate(images.classes)
                 if (images.labels == i).any()}
    return {"accuracy": right.float().mean().item(), "chance": 1 / len(images.classes), "per_class": per_class,
            "images": len(images)}
