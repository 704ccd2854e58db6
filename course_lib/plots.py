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


def _finish(fig, ax, title: str | None):
    """The common ending of a single-axis plot: optional title, legend, tight layout."""
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
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
    ax_loss.set_xlabel("step"), ax_loss.set_ylabel("loss (log scale, clipped at 1e-16)"), ax_loss.set_title("loss")
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
    return _finish(fig, ax, title)


def plot_parameter_paths(runs: dict, target=None, title: str | None = None):
    """Paths of (w, b) for several regression runs, e.g. full-batch against minibatch SGD."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, run in runs.items():
        ax.plot(run.path[:, 0], run.path[:, 1], ".-", ms=2, lw=0.8, label=name)
    if target is not None:
        ax.plot(*target, "k*", ms=12, label="least squares")
    ax.set_xlabel("w"), ax.set_ylabel("b")
    return _finish(fig, ax, title)


def show_filters(weight, title: str = "first-layer filters"):
    """conv1's filters as small RGB tiles (each filter scaled to its own range)."""
    import math

    w = weight.detach().cpu().float()
    n = w.shape[0]
    cols = 16
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.6, rows * 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            f = w[i]
            f = (f - f.min()) / (f.max() - f.min() + 1e-8)
            ax.imshow(f.permute(1, 2, 0).numpy(), interpolation="nearest")
    fig.suptitle(title)
    fig.tight_layout(pad=0.1)
    return fig


def show_neighbours(queries: ImageData, pool: ImageData, idx, sims=None, n_queries: int = 6, title: str | None = None):
    """Each row: a query image, then its nearest neighbours in feature space, titled with their class."""
    k = idx.shape[1]
    n = min(n_queries, len(queries))
    fig, axes = plt.subplots(n, k + 1, figsize=((k + 1) * 1.1, n * 1.3 + 0.4), squeeze=False, layout="constrained")
    for r in range(n):
        tiles = [(queries.images[r], f"query: {queries.classes[queries.labels[r]]}", "black")]
        for j in range(k):
            i = int(idx[r, j])
            same = pool.labels[i] == queries.labels[r]
            tiles.append((pool.images[i], pool.classes[pool.labels[i]], "green" if same else "red"))
        for ax, (img, name, colour) in zip(axes[r], tiles):
            ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_title(name, fontsize=7, color=colour)
            ax.axis("off")
    if title:
        fig.suptitle(title)  # constrained layout keeps titles and labels apart
    return fig


def plot_projection(points, labels, classes, title: str | None = None):
    """A 2-D scatter of projected features, coloured by class."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for c, name in enumerate(classes):
        m = labels == c
        ax.scatter(points[m, 0].numpy(), points[m, 1].numpy(), s=6, alpha=0.6, label=name)
    ax.set_xticks([]), ax.set_yticks([])
    ax.legend(fontsize=8, markerscale=2)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _accuracy_lines(rows: list[dict], series: str, x: str, xlabel: str, styles=("o-",)):
    """Validation accuracy against `x` on a log axis, one line per value of `series` (styles in turn); diverged runs
    (val_acc None) left out. Returns (fig, ax) for the caller to finish."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for style, name in zip(styles * len(rows), dict.fromkeys(r[series] for r in rows)):
        mine = sorted((r for r in rows if r[series] == name and r["val_acc"] is not None), key=lambda r: r[x])
        ax.plot([r[x] for r in mine], [100 * r["val_acc"] for r in mine], style, label=name)
    ax.set_xscale("log")
    ax.minorticks_off()
    xs = sorted({r[x] for r in rows})
    ax.set_xticks(xs, [str(v) for v in xs])
    ax.set_xlabel(xlabel), ax.set_ylabel("validation accuracy (%)")
    return fig, ax


def plot_accuracy_vs_labels(rows: list[dict], title: str | None = None):
    """Validation accuracy against the label budget, one line per strategy; diverged runs are left out."""
    fig, ax = _accuracy_lines(rows, "strategy", "labels_per_class", "training labels per class (and as many validation labels)")
    return _finish(fig, ax, title)


def plot_probe_by_size(rows: list[dict], chance: float, title: str | None = None):
    """Linear-probe validation accuracy against input size, one line per source of weights, each with its own
    marker and line style (not colour alone); chance as a dotted line; diverged probes left out."""
    fig, ax = _accuracy_lines(rows, "source", "size", "input size (pixels a side)", styles=("o-", "s--", "^-.", "D:"))
    ax.axhline(100 * chance, color="grey", linestyle=":", linewidth=1, label="chance")
    return _finish(fig, ax, title)


def plot_freeze_runs(rows: list[dict], title: str = "freeze explorer"):
    """Validation accuracy against freeze depth, one line per learning rate; diverged runs marked with x at 0."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for lr in sorted({r["lr"] for r in rows}):
        mine = sorted((r for r in rows if r["lr"] == lr), key=lambda r: r["depth"])
        ok = [r for r in mine if r["val_acc"] is not None]
        line, = ax.plot([r["depth"] for r in ok], [100 * r["val_acc"] for r in ok], "o-", label=f"lr {lr:g}")
        bad = [r for r in mine if r["val_acc"] is None]
        if bad:
            ax.plot([r["depth"] for r in bad], [0] * len(bad), "x", color=line.get_color(), ms=10,
                    label=f"lr {lr:g}: diverged")
    ax.set_xticks(range(6), ["0\nnone", "1\nstem", "2\n+layer1", "3\n+layer2", "4\n+layer3", "5\n+layer4"])
    ax.set_xlabel("stages frozen"), ax.set_ylabel("validation accuracy (%)"), ax.set_title(title)
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_confusion(confusion, classes, title: str = "confusion matrix (rows: true, columns: predicted)"):
    """Counts per (true, predicted) pair, written in; each cell's colour is its count as a share of its row
    (of the true class's images), so the colours compare classes of any size. Text is white on dark cells."""
    fig, ax = plt.subplots(figsize=(7, 5.5))
    c = confusion.float()
    share = c / c.sum(1, keepdim=True).clamp(min=1)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            r, g, b, _ = image.cmap(image.norm(float(share[i, j])))
            ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's images")
    ax.set_title(f"{title}\nnumbers: counts; colour: share of the row", fontsize=10)
    fig.tight_layout()
    return fig


def show_mistakes(images: ImageData, indices, ev, title: str = "most confident mistakes"):
    """A gallery of misclassified images: predicted class (confidence) and true class. No mistakes: a figure that
    says so (a model that gets every validation photo right is a result, not an error)."""
    n = len(indices)
    if n == 0:
        fig, ax = plt.subplots(figsize=(6, 0.8))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}: none, every image is classified right", ha="center", va="center")
        return fig
    cols = min(6, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.5, rows * 2.0 + 0.4), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices.tolist()):
        pred, true = int(ev.predictions[i]), int(ev.labels[i])
        ax.imshow(images.images[i].permute(1, 2, 0).numpy())
        ax.set_title(f"{images.classes[pred]} {100 * ev.probabilities[i, pred]:.0f}%\n(is {images.classes[true]})",
                     fontsize=7, color="crimson")
    fig.suptitle(title)  # constrained layout keeps each row's labels off the images above
    return fig


def plot_history(history, title: str | None = None):
    """Loss and accuracy per epoch, training and validation; a diverged run is marked in red where it
    stopped, so a live plot never leaves the last good epoch looking like the result."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    epochs = history["epoch"]
    train_colour, val_colour = "tab:blue", "tab:orange"  # the same in both panels
    ax_loss.plot(epochs, history["train_loss"], "o-", color=train_colour, label="train")
    ax_acc.plot(epochs, [100 * a for a in history["train_acc"]], "o-", color=train_colour, label="train (augmented)")
    if history.epochs and "val_loss" in history.last:
        ax_loss.plot(epochs, history["val_loss"], "o-", color=val_colour, label="validation")
        ax_acc.plot(epochs, [100 * a for a in history["val_acc"]], "o-", color=val_colour, label="validation")
    if history.diverged is not None:
        for ax in (ax_loss, ax_acc):
            ax.axvline(len(history) + 1, color="crimson", ls="--", label=history.status())
        ax_loss.set_title(history.status(), color="crimson", fontsize=10)
    ax_loss.set_xlabel("epoch"), ax_loss.set_ylabel("loss"), ax_loss.legend(fontsize=8)
    ax_acc.set_xlabel("epoch"), ax_acc.set_ylabel("accuracy (%)"), ax_acc.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


class LivePlot:
    """A `fit` callback that redraws the history plot in place after every epoch."""

    def __init__(self, title: str | None = None):
        self.title, self.handle = title, None

    def __call__(self, history):
        from IPython.display import display

        fig = plot_history(history, self.title)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)


def plot_lr_find(result, used: float | None = None, title: str = "learning-rate finder"):
    """Smoothed loss against learning rate (log scale), with the suggestion (if any) marked, and the rate actually
    used (`used`, e.g. a one-cycle peak derived from the suggestion) when given."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(result.lrs, result.losses)
    if result.suggestion is not None:
        ax.axvline(result.suggestion, color="crimson", ls="--", label=f"suggestion {result.suggestion:.2g}")
    else:
        title += " (no descending region: no suggestion)"
    if used is not None:
        ax.axvline(used, color="black", ls=":", label=f"rate used {used:.2g}")
    ax.set_xscale("log"), ax.set_xlabel("learning rate"), ax.set_ylabel("smoothed loss"), ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def show_before_after(before, after, labels: tuple[str, str] = ("original", "augmented"), title: str | None = None):
    """Two rows of float images (N, 3, H, W) in [0, 1]: column j shows image j in both rows, so a
    transformation is seen on the same picture."""
    n = len(before)
    fig, axes = plt.subplots(2, n, figsize=(n * 0.95, 2.2), squeeze=False)
    for row, (images, label) in enumerate(zip((before, after), labels)):
        for j in range(n):
            ax = axes[row, j]
            ax.imshow(images[j].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
            ax.set_xticks([]), ax.set_yticks([])
        axes[row, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout(pad=0.2)
    return fig
