import numpy as np
import pytest
import torch

from course_lib import checks, gd, widgets


def test_gd_converges_below_the_bound_and_diverges_above_it():
    for f in (gd.quadratic_1d(4.0), gd.quadratic_2d((1.0, 10.0))):
        bound = gd.stability_bound(f)
        assert bound == pytest.approx(2 / f.largest_curvature)
        below = gd.run_on(f, 0.95 * bound, steps=400)
        above = gd.run_on(f, 1.05 * bound, steps=400)
        assert not below.diverged and below.final_loss < 1e-3 * below.losses[0]
        assert above.diverged and "diverged at step" in above.status()


def test_regimes_on_a_quadratic():
    f = gd.quadratic_1d(2.0)  # L = 2, bound 1
    assert gd.regime(f, 1e-4) == "too small"
    assert gd.regime(f, 0.3) == "good"
    assert gd.regime(f, 0.8) == "oscillating"
    assert gd.regime(f, 1.2) == "diverging"
    osc = gd.run_on(f, 0.8, 10)
    assert np.all(np.diff(np.sign(osc.path[:, 0] - f.center[0])) != 0)  # crosses the minimum every step


def test_divergence_is_reported_not_overflowed():
    with np.errstate(over="raise", invalid="raise"):
        run = gd.run_on(gd.quadratic_2d(), lr=5.0, steps=10_000)
    assert run.diverged and run.diverged_at < 100 and np.all(np.isfinite(run.losses))


def test_momentum_beats_plain_gd_on_an_ill_conditioned_quadratic():
    f = gd.quadratic_2d((1.0, 50.0))
    lr = 1.0 / f.largest_curvature
    plain = gd.run_on(f, lr, steps=100)
    heavy = gd.run_on(f, lr, steps=100, momentum=0.8)
    assert heavy.final_loss < 1e-3 * plain.final_loss


def test_best_fixed_rate_beats_neighbours():
    f = gd.quadratic_2d((1.0, 10.0))
    best = gd.best_fixed_lr(f)
    assert all(gd.run_on(f, best, 60).final_loss <= gd.run_on(f, best * s, 60).final_loss for s in (0.7, 1.08))


def test_the_three_gradients_agree():
    x = np.linspace(-2, 2, 9)
    y = np.sin(x)
    grads = gd.gradients_three_ways(np.array([1.2, 0.7, -0.3]), x, y)
    hand = grads["by hand"]
    assert gd.max_relative_difference(hand, grads["autograd"]) < 1e-10
    assert gd.max_relative_difference(hand, grads["finite differences"]) < 1e-6


def test_linear_regression_by_hand_and_with_torch_agree():
    x, y = gd.make_regression(200, seed=1)
    best = gd.least_squares(x, y)
    hand = gd.linreg_by_hand(x, y, lr=0.1, steps=300)
    torch_run = gd.linreg_torch(x, y, lr=0.1, steps=300)
    assert np.allclose(hand.path[-1], best, atol=1e-3) and np.allclose(torch_run.path[-1], best, atol=1e-3)
    sgd = gd.linreg_torch(x, y, lr=0.05, steps=300, batch_size=4)
    assert np.abs(np.diff(sgd.path[-100:], axis=0)).mean() > np.abs(np.diff(torch_run.path[-100:], axis=0)).mean()


def test_training_step_variants_show_their_failure():
    x, y = gd.make_regression(100, seed=0)
    final = {v: gd.training_step_variant(v, x, y, lr=0.1, steps=80)[-1] for v in gd.TRAINING_STEP_VARIANTS}
    best = float(torch.nn.functional.mse_loss(torch.from_numpy(gd.least_squares(x, y)[0] * x.double().numpy()
                                                                 + gd.least_squares(x, y)[1]).float(), y))
    assert final["correct"] < best * 1.05
    start = gd.training_step_variant("no step", x, y, steps=1)[0]
    assert final["no step"] == pytest.approx(start) and final["zero_grad after backward"] == pytest.approx(start)
    assert final["no zero_grad"] > 2 * final["correct"]
    with pytest.raises(ValueError, match="unknown variant"):
        gd.training_step_variant("none", x, y)


def test_learning_rate_widget_driven_without_a_browser():
    w = widgets.LearningRateExplorer(lr=0.05, steps=50)
    assert not w.result.diverged
    w.lr.value = 0.3  # above 2/L = 0.2 for curvatures (1, 10)
    assert w.result.diverged and "diverged at step" in w.status.value
    w.lr.value = 0.1
    w.steps.value = 120
    assert not w.result.diverged and len(w.result.losses) == 121
    w.momentum.value = 0.5
    assert w.result.momentum == 0.5
    w.x0.value = 0.0
    assert w.result.path[0][0] == 0.0


def test_widget_check_reacts():
    w = widgets.WidgetCheck()
    w.slider.value = 7
    assert w.result == 49 and "49" in w.label.value


# ------------------------------------------------------------------ exercise checks: right and wrong
def test_check_gd_step():
    checks.check_gd_step(lambda theta, grad, lr: theta - lr * grad)
    for wrong in (lambda t, g, lr: t + lr * g, lambda t, g, lr: t - g, lambda t, g, lr: t - lr,
                  lambda t, g, lr: (t - lr * g).sum()):
        with pytest.raises(AssertionError):
            checks.check_gd_step(wrong)

    def stub(t, g, lr):
        raise NotImplementedError
    with pytest.raises(checks.ExerciseNotDone, match="not implemented"):
        checks.check_gd_step(stub)


def test_check_numerical_grad():
    checks.check_numerical_grad(gd.finite_difference_grad)

    def no_halving(fn, theta, eps):
        return gd.finite_difference_grad(fn, theta, eps) * 2

    def in_place(fn, theta, eps):
        g = np.zeros_like(theta)
        for i in range(len(theta)):
            theta[i] += eps
            up = fn(theta)
            theta[i] -= 2 * eps
            g[i] = (up - fn(theta)) / (2 * eps)
        return g  # leaves theta nudged by -eps

    def all_at_once(fn, theta, eps):
        return np.full_like(theta, (fn(theta + eps) - fn(theta - eps)) / (2 * eps))

    with pytest.raises(AssertionError, match="constant factor"):
        checks.check_numerical_grad(no_halving)
    with pytest.raises(AssertionError, match="changed the theta"):
        checks.check_numerical_grad(in_place)
    with pytest.raises(AssertionError):
        checks.check_numerical_grad(all_at_once)


def test_check_converging_lr():
    f = gd.quadratic_2d((1.0, 10.0))
    checks.check_converging_lr(gd.best_fixed_lr(f), f, steps=80)
    with pytest.raises(AssertionError, match="diverged"):
        checks.check_converging_lr(0.25, f, steps=80)
    with pytest.raises(AssertionError, match="creeps"):
        checks.check_converging_lr(0.01, f, steps=80)
    with pytest.raises(AssertionError, match="positive number"):
        checks.check_converging_lr("0.1", f, steps=80)


def test_check_training_loop():
    def fixed(x, y, lr, steps):
        model = torch.nn.Linear(1, 1)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        return model

    def broken(x, y, lr, steps):
        model = torch.nn.Linear(1, 1)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(steps):
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        return model

    checks.check_training_loop(fixed)
    with pytest.raises(AssertionError, match="gradient only from that step"):
        checks.check_training_loop(broken)
    with pytest.raises(AssertionError, match="should return the trained model"):
        checks.check_training_loop(lambda x, y, lr, steps: None)
