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


def test_heavy_ball_bound_by_hand():
    valley = gd.quadratic_2d((1.0, 10.0))  # L = 10
    assert gd.stability_bound(valley) == pytest.approx(0.2)
    assert gd.stability_bound(valley, momentum=0.5) == pytest.approx(0.3)  # 2 · 1.5 / 10
    assert gd.stability_bound(gd.quadratic_1d(4.0), momentum=0.8) == pytest.approx(0.9)  # 2 · 1.8 / 4
    with pytest.raises(ValueError, match="momentum"):
        gd.stability_bound(valley, momentum=1.0)


@pytest.mark.parametrize("momentum", [0.3, 0.5, 0.8])
def test_heavy_ball_converges_just_below_its_bound_and_diverges_just_above(momentum):
    f = gd.quadratic_2d((1.0, 10.0))
    bound = 2 * (1 + momentum) / 10
    below = gd.run_on(f, 0.98 * bound, steps=3000, momentum=momentum)
    above = gd.run_on(f, 1.02 * bound, steps=3000, momentum=momentum)
    assert 0.98 * bound > 0.2  # above plain GD's 2/L: momentum really raises the limit
    assert not below.diverged and below.final_loss < 1e-8 * below.losses[0]
    assert above.diverged


def test_tuned_momentum_beats_tuned_plain_gd_on_an_ill_conditioned_quadratic():
    f = gd.quadratic_2d((1.0, 50.0), angle_deg=20)
    plain = gd.tuned_run(f, 100, start=(-2.0, 3.0))
    heavy = gd.tuned_run(f, 100, start=(-2.0, 3.0), momenta=np.arange(0.0, 0.96, 0.05))
    assert plain.momentum == 0 and 1 / 50 < plain.lr < 2 / 50  # tuned plain GD overshoots the steep direction
    steep = np.array([-np.sin(np.radians(20)), np.cos(np.radians(20))])  # eigenvector of curvature 50
    across = (plain.path - f.center) @ steep
    assert np.all(across[:-1] * across[1:] < 0)  # ... so its path zig-zags across the valley at every step
    assert heavy.momentum > 0 and heavy.lr > 2 / 50  # momentum's tuned rate is past plain GD's bound
    assert heavy.final_loss < 1e-6 * plain.final_loss
    for frac in (0.5, 0.9, 0.99):  # nothing on the grid does better than the run it picked
        assert gd.run_on(f, frac * 2 / 50, 100, start=(-2.0, 3.0)).final_loss >= plain.final_loss


def test_run_outcome_in_one_word():
    f = gd.quadratic_1d(2.0)  # bound 1
    assert gd.run_on(f, 0.4, 25).outcome() == "converged"
    assert gd.run_on(f, 0.02, 25).outcome() == "not converged"
    assert gd.run_on(f, 1.05, 25).outcome() == "diverging"
    assert gd.run_on(f, 3.0, 100).outcome() == "diverged"


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


def test_variant_status_reports_a_blowup_as_diverged_not_as_a_number():
    x, y = gd.make_regression(100, seed=0)
    late = gd.training_step_variant("step before backward", x, y, lr=0.5, steps=60)
    assert gd.variant_status(late, 60) == f"diverged at step {len(late)}"
    correct = gd.training_step_variant("correct", x, y, lr=0.5, steps=60)
    assert gd.variant_status(correct, 60).startswith("final loss")
    assert "diverged" in gd.variant_status([1.0, float("nan")], 2)


def test_contraction_factors_shallow_below_the_crossover_steep_near_the_bound():
    f = gd.quadratic_2d(curvatures=(1.0, 10.0))
    shallow, steep = gd.contraction_factors(f, 0.06)
    assert shallow == pytest.approx(0.94) and steep == pytest.approx(0.4)
    shallow, steep = gd.contraction_factors(f, 0.19)  # above 2/(1+10): the steep direction is slower
    assert steep > shallow
    assert gd.contraction_factors(f, 2 / 11) == pytest.approx((9 / 11, 9 / 11))


def test_step_before_backward_applies_the_previous_iterations_gradient():
    x, y = gd.make_regression(100, seed=0)
    correct = gd.training_step_variant("correct", x, y, lr=0.1, steps=60)
    late = gd.training_step_variant("step before backward", x, y, lr=0.1, steps=60)
    nothing = gd.training_step_variant("no step", x, y, lr=0.1, steps=60)
    assert late[1] == late[0] == correct[0]  # the first update had no gradient and did nothing
    assert late[2] == pytest.approx(correct[1], rel=1e-6)  # the second applied the gradient at the start
    assert abs(late[3] - correct[2]) > 0.1  # from then on, a gradient one step late: another path
    assert late[-1] < 0.5 * nothing[-1] and late != correct
    assert len(gd.training_step_variant("step before backward", x, y, lr=0.5, steps=60)) < 60  # blows up
    assert gd.training_step_variant("correct", x, y, lr=0.5, steps=60)[-1] < 1.05 * correct[-1]
    with pytest.raises(ValueError, match="unknown variant"):
        gd.training_step_variant("none", x, y)


def test_learning_rate_widget_driven_without_a_browser():
    w = widgets.LearningRateExplorer(lr=0.05, steps=50)  # curvatures (1, 10): 2/L = 0.2
    assert not w.result.diverged and w.fraction.value == pytest.approx(0.25)
    before = w.status.value
    w.lr.value = 0.3
    assert w.result.diverged and "diverged at step" in w.status.value and w.status.value != before
    assert w.fraction.value == pytest.approx(1.5)
    w.fraction.value = 0.99  # the fine slider: lr as a multiple of the bound
    assert w.lr.value == pytest.approx(0.198) and w.result.lr == pytest.approx(0.198) and not w.result.diverged
    w.fraction.value = 1.01
    assert w.result.lr == pytest.approx(0.202) and w.result.outcome() in ("diverging", "diverged")
    w.lr.value = 0.1
    w.steps.value = 120
    assert not w.result.diverged and len(w.result.losses) == 121
    w.x0.value = 0.0
    assert w.result.path[0][0] == 0.0


def test_learning_rate_widget_prints_both_bounds():
    w = widgets.LearningRateExplorer(lr=0.25, steps=200)
    assert "2/L = <b>0.2</b>" in w.bounds.value and "μ = 0," in w.bounds.value
    assert "2(1+μ)/L = <b>0.2</b>" in w.bounds.value
    assert w.result.outcome() == "diverged"
    w.momentum.value = 0.5
    assert "2/L = <b>0.2</b>" in w.bounds.value and "μ = 0.5," in w.bounds.value
    assert "2(1+μ)/L = <b>0.3</b>" in w.bounds.value
    assert w.lr.value == 0.25 and w.fraction.value == pytest.approx(0.25 / 0.3)  # same rate, new bound
    assert w.result.momentum == 0.5 and w.result.outcome() == "converged"


def test_learning_rate_widget_sliders_are_long_and_aligned():
    w = widgets.LearningRateExplorer()
    sliders = [w.lr, w.fraction, w.momentum, w.steps, w.x0, w.y0]
    assert {s.layout.width for s in sliders} == {"560px"}
    assert {s.style.description_width for s in sliders} == {"150px"}
    assert w.fraction.step <= 0.001


def test_widget_check_reacts():
    w = widgets.WidgetCheck()
    w.slider.value = 7
    assert w.result == 49 and "49" in w.label.value


# ------------------------------------------------------------------ exercise checks: right and wrong
def test_check_gd_step():
    checks.check_gd_step(lambda theta, grad, lr: theta - lr * grad)
    for wrong in (lambda t, g, lr: t + lr * g, lambda t, g, lr: t - g, lambda t, g, lr: t - lr,
                  lambda t, g, lr: (t - lr * g).sum()):
        with pytest.raises(AssertionError, match="case 1 of 3"):
            checks.check_gd_step(wrong)

    def in_place(t, g, lr):
        t -= lr * g
        return t

    def no_return(t, g, lr):
        t -= lr * g

    with pytest.raises(AssertionError, match="changed the caller's theta"):
        checks.check_gd_step(in_place)
    with pytest.raises(AssertionError, match="returned None"):
        checks.check_gd_step(no_return)

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

    def forward(fn, theta, eps):
        return np.array([(fn(theta + e) - fn(theta)) / eps for e in np.eye(len(theta)) * eps])

    def backward(fn, theta, eps):
        return np.array([(fn(theta) - fn(theta - e)) / eps for e in np.eye(len(theta)) * eps])

    for one_sided in (forward, backward):  # close enough on gentle functions, caught on the steep valley
        with pytest.raises(AssertionError, match=r"case 4 of 4 \(a steep valley.*one-sided difference"):
            checks.check_numerical_grad(one_sided)
    with pytest.raises(AssertionError, match="constant factor"):
        checks.check_numerical_grad(no_halving)
    with pytest.raises(AssertionError, match="changed the theta"):
        checks.check_numerical_grad(in_place)
    with pytest.raises(AssertionError):
        checks.check_numerical_grad(all_at_once)


def test_check_converging_lr():
    # lesson 1's exercise: from (-2, 3) the final loss after 150 steps is
    # 0.25·(1 − lr)^300 + 125·(1 − 20·lr)^300, below 1e-6 for lr in about (0.0406, 0.0970), by hand
    f, start = gd.quadratic_2d((1.0, 20.0), angle_deg=45), (-2.0, 3.0)
    for lr in (0.042, 0.07, 0.096, np.float32(0.07)):
        checks.check_converging_lr(lr, f, start, steps=150)
    for lr, hint in [(0.04, "creeps"), (0.098, "overshoots"), (0.1, "at or above 2/L"), (0.11, "at or above 2/L"),
                     (0.115, "diverged at step"), ("0.07", "positive number"), (True, "positive number")]:
        with pytest.raises(AssertionError, match=hint):
            checks.check_converging_lr(lr, f, start, steps=150)
    # from (3, 3), on the shallow eigenvector, only rounding errors excite the steep direction: at lr = 0.115
    # the loss dips below 1e-6 on the way, then the steep component grows 1.3-fold per step. The final loss counts.
    with pytest.raises(AssertionError, match="at or above 2/L"):
        checks.check_converging_lr(0.115, f, (3.0, 3.0), steps=150)


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

    def zero_grad_after_backward(x, y, lr, steps):
        model = torch.nn.Linear(1, 1)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(steps):
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.zero_grad()
            opt.step()
        return model

    checks.check_training_loop(fixed)
    with pytest.raises(AssertionError, match="gradient only from that step"):
        checks.check_training_loop(broken)
    with pytest.raises(AssertionError, match="case 1 of 2.*never moved"):
        checks.check_training_loop(zero_grad_after_backward)
    with pytest.raises(AssertionError, match="should return the trained model"):
        checks.check_training_loop(lambda x, y, lr, steps: torch.nn.Linear(1, 1).weight)
