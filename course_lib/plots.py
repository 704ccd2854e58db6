"""Matplotlib figures for the lessons; each function takes data and returns the Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from .data import ImageData


def show_images(data: ImageData, per_class: int = 6, seed: int = 0, title: str | None = None):
    """A grid: one row per class, `per_class` random images each, class names on the left."""
    gen = torch.Generator().manual_seed(seed)
    k = len(data.classes)
    fig, axes = plt.subplots(k, per_class, figsize=(per_class * 0.9, k * 0.9), squeeze=False)
    for c, name in enumerate(data.classes):
        idx = torch.nonzero(data.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)[:per_class]]
        for j in range(per_class):
            ax = axes[c, j]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(idx):
                ax.imshow(data.images[idx[j]].permute(1, 2, 0).numpy())
        axes[c, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout(pad=0.2)
    return fig
