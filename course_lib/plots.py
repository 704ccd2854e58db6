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


def _legend(run, label: str | None) -> str:
    name = label or f"lr={run.lr:.3g}" + (f", momentum={run.momentum:g}" if run.momentum else "")
    return name + (f" (diverged at step {run.diverged_at})" if run.diverged else "")


def plot_runs(f, runs, labels=None, title: str | None = None, axes=None):
    """Gradient-descent paths on a quadratic (contours in 2-D, the curve in 1-D) and loss against step."""
    import numpy as np

    labels = labels or [None] * len(runs)
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    else:
        fig = axes[0].figure
    ax_path, ax_loss = axes
    # the view spans the starts and the minimum: a diverging path visibly flies out of it
    starts = np.concatenate([r.path[:1] for r in runs])
    radius = 1.3 * max(np.abs(starts - f.center).max(), 0.5)
    lo, hi = f.center - radius, f.center + radius
    if f.dim == 2:
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 120), np.linspace(lo[1], hi[1], 120))
        d = np.stack([gx - f.center[0], gy - f.center[1]], -1)
        z = 0.5 * np.einsum("...i,ij,...j->...", d, f.A, d)
        ax_path.contour(gx, gy, z, levels=np.geomspace(max(z.max(), 1e-3) * 1e-3, z.max(), 12), cmap="viridis", linewidths=0.8, alpha=0.6)
        for run, label in zip(runs, labels):
            ax_path.plot(run.path[:, 0], run.path[:, 1], ".-", ms=3, lw=1, label=_legend(run, label))
        ax_path.plot(*f.center, "k*", ms=10)
        ax_path.set_xlim(lo[0], hi[0]), ax_path.set_ylim(lo[1], hi[1]), ax_path.set_aspect("equal")
        ax_path.set_xlabel("θ₁"), ax_path.set_ylabel("θ₂")
    else:
        t = np.linspace(lo[0], hi[0], 200)
        curve = [f.loss([v]) for v in t]
        ax_path.plot(t, curve, color="grey", lw=1)
        for run, label in zip(runs, labels):
            ax_path.plot(run.path[:, 0], run.losses, "o-", ms=3, lw=0.8, label=_legend(run, label))
        ax_path.set_xlim(lo[0], hi[0]), ax_path.set_ylim(-0.05 * max(curve), 1.1 * max(curve))
        ax_path.set_xlabel("θ"), ax_path.set_ylabel("loss")
    ax_path.set_title("path")
    for run, label in zip(runs, labels):
        ax_loss.semilogy(np.maximum(run.losses, 1e-16), label=_legend(run, label))
    ax_loss.set_xlabel("step"), ax_loss.set_ylabel("loss (log scale)"), ax_loss.set_title("loss")
    ax_loss.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(curves: dict, xlabel: str = "step", ylabel: str = "loss", title: str | None = None, logy: bool = True):
    """Several named curves on one axis (e.g. the loss of each training-step variant)."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name, ys in curves.items():
        ax.plot(ys, label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_parameter_paths(runs: dict, target=None, title: str | None = None):
    """Paths of (w, b) for several regression runs, e.g. full-batch against minibatch SGD."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, run in runs.items():
        ax.plot(run.path[:, 0], run.path[:, 1], ".-", ms=2, lw=0.8, label=name)
    if target is not None:
        ax.plot(*target, "k*", ms=12, label="least squares")
    ax.set_xlabel("w"), ax.set_ylabel("b")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
