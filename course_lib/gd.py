"""Gradient descent on problems small enough to see: quadratics, a least-squares model, linear regression.

Everything is plain numpy/torch so that a lesson can draw it and a test can check it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch


# ------------------------------------------------------------------------------------- quadratics
@dataclass
class Quadratic:
    """f(θ) = ½ (θ − c)ᵀ A (θ − c): a bowl with its minimum at c and curvatures = eigenvalues of A."""

    A: np.ndarray
    center: np.ndarray

    def __post_init__(self):
        self.A = np.atleast_2d(np.asarray(self.A, dtype=float))
        self.center = np.atleast_1d(np.asarray(self.center, dtype=float))

    @property
    def dim(self) -> int:
        return len(self.center)

    def loss(self, theta) -> float:
        d = np.asarray(theta, dtype=float) - self.center
        return float(0.5 * d @ self.A @ d)

    def grad(self, theta) -> np.ndarray:
        return self.A @ (np.asarray(theta, dtype=float) - self.center)

    @property
    def curvatures(self) -> np.ndarray:
        return np.linalg.eigvalsh(self.A)

    @property
    def largest_curvature(self) -> float:
        """L: the steepest direction's curvature (the gradient's Lipschitz constant)."""
        return float(self.curvatures.max())

    @property
    def condition_number(self) -> float:
        c = self.curvatures
        return float(c.max() / c.min())


def quadratic_1d(curvature: float = 2.0, center: float = 1.0) -> Quadratic:
    return Quadratic([[curvature]], [center])


def quadratic_2d(curvatures=(1.0, 10.0), angle_deg: float = 30.0, center=(1.0, 1.0)) -> Quadratic:
    """An elongated valley: curvatures along two axes rotated by `angle_deg`."""
    a = math.radians(angle_deg)
    R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return Quadratic(R @ np.diag(curvatures) @ R.T, center)


def stability_bound(f: Quadratic, momentum: float = 0.0) -> float:
    """The largest stable rate on a quadratic: 2(1 + μ) / L, which is 2 / L for plain GD.

    Along a direction of curvature λ, heavy ball moves the distance d by
    d_{k+1} = (1 + μ − lr·λ) d_k − μ d_{k−1}; for 0 ≤ μ < 1 both roots of z² − (1 + μ − lr·λ) z + μ lie inside
    the unit circle iff 0 < lr·λ < 2(1 + μ).
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    return 2.0 * (1.0 + momentum) / f.largest_curvature


# --------------------------------------------------------------------------------------- GD runs
@dataclass
class Run:
    """A gradient-descent path: parameters and loss at every step, and where it blew up, if it did."""

    path: np.ndarray
    losses: np.ndarray
    lr: float
    momentum: float = 0.0
    diverged_at: int | None = None

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def final_loss(self) -> float:
        return float(self.losses[-1])

    def steps_to(self, tol: float) -> int | None:
        """First step whose loss is below `tol` (None if never)."""
        below = np.nonzero(self.losses < tol)[0]
        return int(below[0]) if len(below) else None

    def outcome(self, tol: float = 1e-6) -> str:
        """One word for a title or a table: 'diverged', 'converged', 'diverging' or 'not converged'."""
        if self.diverged:
            return "diverged"
        if self.steps_to(tol) is not None:
            return "converged"
        if len(self.losses) > 2 and self.losses[-1] > self.losses[0] and self.losses[-1] > self.losses[-2]:
            return "diverging"
        return "not converged"

    def status(self, tol: float = 1e-6) -> str:
        outcome = self.outcome(tol)
        if outcome == "diverged":
            return f"diverged at step {self.diverged_at}"
        if outcome == "converged":
            return f"converged: loss < {tol:g} at step {self.steps_to(tol)}"
        if outcome == "diverging":
            return f"diverging: the loss grew {self.losses[-1] / max(self.losses[0], 1e-300):.3g}-fold in {len(self.losses) - 1} steps"
        return f"not converged after {len(self.losses) - 1} steps (loss {self.final_loss:.3g})"


def gradient_descent(grad: Callable, loss: Callable, start, lr: float, steps: int, momentum: float = 0.0,
                     blowup: float = 1e8) -> Run:
    """θ ← θ − lr·v with v ← momentum·v + ∇L(θ) (heavy ball; momentum=0 is plain GD).

    Stops as soon as the loss exceeds `blowup` times its start (or is not finite) and records the step,
    so a too-large rate reads "diverged at step k" instead of overflowing.
    """
    theta = np.atleast_1d(np.asarray(start, dtype=float)).copy()
    v = np.zeros_like(theta)
    path, losses = [theta.copy()], [loss(theta)]
    limit = blowup * max(losses[0], 1.0)
    diverged_at = None
    for k in range(1, steps + 1):
        v = momentum * v + grad(theta)
        theta = theta - lr * v
        value = loss(theta)
        if not math.isfinite(value) or value > limit:
            diverged_at = k
            break
        path.append(theta.copy())
        losses.append(value)
    return Run(np.array(path), np.array(losses), lr, momentum, diverged_at)


def run_on(f: Quadratic, lr: float, steps: int = 50, start=None, momentum: float = 0.0) -> Run:
    """Gradient descent on a quadratic from `start` (default: 2 units away from the minimum on each axis)."""
    start = f.center + 2.0 if start is None else start
    return gradient_descent(f.grad, f.loss, start, lr, steps, momentum)


def regime(f: Quadratic, lr: float, steps: int = 50, tol: float = 1e-3, start=None) -> str:
    """'diverging' (lr·L > 2), 'oscillating' (1 < lr·L < 2: overshoots along the steepest direction),
    'too small' (does not reach `tol` within `steps`) or 'good'."""
    ratio = lr * f.largest_curvature
    if ratio >= 2:
        return "diverging"
    if ratio > 1:
        return "oscillating"
    run = run_on(f, lr, steps, start)
    return "good" if run.steps_to(tol) is not None else "too small"


def best_fixed_lr(f: Quadratic) -> float:
    """The rate 2 / (λmin + λmax), fastest for plain GD on a quadratic."""
    c = f.curvatures
    return 2.0 / (c.min() + c.max())


def tuned_run(f: Quadratic, steps: int, start, momenta=(0.0,), fractions=np.linspace(0.05, 0.99, 48)) -> Run:
    """The run with the lowest final loss over a grid: each momentum with rates at `fractions` of its own
    stability bound. Tuning each method on the problem and budget at hand makes a comparison fair."""
    runs = [run_on(f, frac * stability_bound(f, m), steps, start, m) for m in momenta for frac in fractions]
    return min((r for r in runs if not r.diverged), key=lambda r: r.final_loss)


# ------------------------------------------------------------------------ gradients three ways
def model_outputs(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A small nonlinear model f(θ; x) = θ0 · tanh(θ1 · x + θ2), one output per data point."""
    return theta[0] * np.tanh(theta[1] * x + theta[2])


def model_jacobian(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """J_f(θ): n x 3, row i = ∂f(θ; x_i)/∂θ, derived by hand."""
    t = np.tanh(theta[1] * x + theta[2])
    s = 1 - t ** 2
    return np.stack([t, theta[0] * s * x, theta[0] * s], axis=1)


def squared_error(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    r = model_outputs(theta, x) - y
    return float(r @ r)


def grad_by_hand(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """∇θ ‖f(θ;x) − y‖² = 2 · J_f(θ)ᵀ (f(θ;x) − y): a p-vector, the Jacobian transposed."""
    return 2.0 * model_jacobian(theta, x).T @ (model_outputs(theta, x) - y)


def grad_autograd(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The same gradient from torch autograd (float64)."""
    t = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    xt, yt = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    loss = ((t[0] * torch.tanh(t[1] * xt + t[2]) - yt) ** 2).sum()
    loss.backward()
    return t.grad.numpy()


def finite_difference_grad(fn: Callable[[np.ndarray], float], theta, eps: float = 1e-6) -> np.ndarray:
    """Central differences: (fn(θ + eps·e_i) − fn(θ − eps·e_i)) / (2·eps) for each coordinate i."""
    theta = np.asarray(theta, dtype=float)
    g = np.zeros_like(theta)
    for i in range(len(theta)):
        e = np.zeros_like(theta)
        e[i] = eps
        g[i] = (fn(theta + e) - fn(theta - e)) / (2 * eps)
    return g


def gradients_three_ways(theta, x, y, eps: float = 1e-6) -> dict[str, np.ndarray]:
    theta = np.asarray(theta, dtype=float)
    return {"by hand": grad_by_hand(theta, x, y), "autograd": grad_autograd(theta, x, y),
            "finite differences": finite_difference_grad(lambda t: squared_error(t, x, y), theta, eps)}


def max_relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), 1e-12)))


# ---------------------------------------------------------------------------- linear regression
def make_regression(n: int = 200, w: float = 2.0, b: float = -1.0, noise: float = 0.5, seed: int = 0):
    """y = w·x + b + noise, x uniform in [-2, 2]; float32 torch tensors of shape (n, 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 4 - 2
    y = w * x + b + noise * torch.randn(n, 1, generator=g)
    return x, y


def linreg_by_hand(x: torch.Tensor, y: torch.Tensor, lr: float, steps: int) -> Run:
    """Full-batch GD on mean squared error with the gradient written out: dL/dw = 2·mean((wx+b−y)x)."""
    xs, ys = x.flatten().double().numpy(), y.flatten().double().numpy()

    def loss(p):
        return float(np.mean((p[0] * xs + p[1] - ys) ** 2))

    def grad(p):
        r = p[0] * xs + p[1] - ys
        return np.array([2 * np.mean(r * xs), 2 * np.mean(r)])

    return gradient_descent(grad, loss, [0.0, 0.0], lr, steps)


def linreg_torch(x: torch.Tensor, y: torch.Tensor, lr: float, steps: int, batch_size: int | None = None,
                 momentum: float = 0.0, seed: int = 0) -> Run:
    """The same with nn.Linear and torch.optim.SGD; batch_size < n makes it minibatch SGD (a noisier path)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    n = len(x)
    bs = batch_size or n

    def full_loss():
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(model(x), y))

    path, losses = [[0.0, 0.0]], [full_loss()]
    for _ in range(steps):
        idx = torch.randperm(n, generator=g)[:bs]
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        path.append([model.weight.item(), model.bias.item()])
        losses.append(full_loss())
    return Run(np.array(path), np.array(losses), lr, momentum)


def least_squares(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The exact (w, b) minimizing the mean squared error, for reference."""
    X = torch.cat([x, torch.ones_like(x)], 1).double()
    return torch.linalg.lstsq(X, y.double()).solution.flatten().numpy()


# ------------------------------------------------------------------------ anatomy of a train step
TRAINING_STEP_VARIANTS = {
    "correct": "zero_grad, forward, loss, backward, step",
    "no zero_grad": "gradients of every earlier step pile up in .grad",
    "no step": "gradients are computed and thrown away: nothing learns",
    "step before backward": "forward, loss, step, zero_grad, backward: each step uses the previous "
                            "iteration's gradient; the first has none",
    "zero_grad after backward": "the gradient is erased before step uses it: nothing learns",
}


def training_step_variant(variant: str, x: torch.Tensor, y: torch.Tensor, lr: float = 0.05,
                          steps: int = 60, seed: int = 0) -> list[float]:
    """Loss per step of linear regression trained with one of TRAINING_STEP_VARIANTS."""
    if variant not in TRAINING_STEP_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {list(TRAINING_STEP_VARIANTS)}")
    torch.manual_seed(seed)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        if variant in ("correct", "no step"):
            opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        if variant == "step before backward":
            opt.step()  # .grad still holds the gradient the previous iteration's backward left there
            opt.zero_grad()
        loss.backward()
        if variant == "zero_grad after backward":
            opt.zero_grad()
        if variant in ("correct", "no zero_grad", "zero_grad after backward"):
            opt.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]) or losses[-1] > 1e8:
            break
    return losses


def variant_status(losses: list[float], steps: int) -> str:
    """'diverged at step k' when training_step_variant stopped early (the loss blew up), else the final loss."""
    if len(losses) < steps or not math.isfinite(losses[-1]):
        return f"diverged at step {len(losses)}"
    return f"final loss {losses[-1]:8.4f}"


def contraction_factors(f: Quadratic, lr: float) -> tuple[float, float]:
    """Per-step factors |1 − lr·λmin| and |1 − lr·λmax| of plain GD on a quadratic; the larger one sets the pace."""
    c = f.curvatures
    return abs(1 - lr * float(c.min())), abs(1 - lr * float(c.max()))
