import math

import pytest
import torch
import torch.nn as nn

from course_lib import data, features, models, train
from course_lib.storage import atomic_torch_save


def small_model(num_classes=4):
    torch.manual_seed(0)
    return models.build_resnet18(num_classes)


@pytest.fixture
def toy():
    return data.synthetic_splits(n_train=48, n_test=16, num_classes=4)


def batches(d, shuffle=True, seed=0, bs=32):
    return data.Batches(d, bs, shuffle=shuffle, augment=shuffle, normalize=None, seed=seed)


def test_fit_learns_a_learnable_task(toy):
    model = small_model()
    before = train.evaluate(model, batches(toy.test, shuffle=False), device="cpu")
    hist = train.fit(model, batches(toy.train), batches(toy.test, shuffle=False), epochs=6, lr=0.02,
                     device="cpu", progress=False)
    assert len(hist) == 6 and hist.diverged is None
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    assert max(hist["val_acc"]) >= 0.9 > before.accuracy
    for key in ("train_acc", "val_loss", "lr", "seconds", "images_per_s"):
        assert key in hist.last
    # keep_best restored the best validation epoch's weights
    assert train.evaluate(model, batches(toy.test, shuffle=False), device="cpu").accuracy == max(hist["val_acc"])


def test_schedules_shape_the_learning_rate():
    p = [nn.Parameter(torch.zeros(1))]
    for name, check in (("onecycle", lambda lrs: max(lrs) == pytest.approx(0.1) and lrs[0] < 0.01 and lrs[-1] < 1e-3),
                        ("cosine", lambda lrs: lrs[0] == pytest.approx(0.1) and lrs[-1] < 1e-3),
                        ("constant", lambda lrs: all(l == pytest.approx(0.1) for l in lrs))):
        opt = torch.optim.SGD(p, lr=0.1)
        sched = train.make_scheduler(opt, name, 100)
        lrs = []
        for _ in range(100):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert check(lrs), name
    with pytest.raises(ValueError, match="unknown schedule"):
        train.make_scheduler(torch.optim.SGD(p, lr=0.1), "linear", 10)


def test_onecycle_warms_up_from_peak_over_25_and_ends_at_peak_over_25000():
    opt = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": 0.1},
                           {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.01}], lr=0.1)
    sched = train.make_scheduler(opt, "onecycle", 100)
    rates = []  # the rates each of the 100 optimizer steps runs at
    for _ in range(100):
        rates.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    for group, (peak, first, last) in enumerate([(0.1, 0.004, 4e-6), (0.01, 0.0004, 4e-7)]):
        lrs = [r[group] for r in rates]
        assert lrs[0] == pytest.approx(first, rel=1e-6)
        assert max(lrs) == pytest.approx(peak, rel=1e-6) and lrs.index(max(lrs)) == 24  # end of the 25% warm-up
        assert lrs[-1] == pytest.approx(last, rel=1e-6)


def test_fit_with_discriminative_groups_and_clipping(toy):
    model = models.freeze(small_model(), "layer2")
    frozen = model.layer1[0].conv1.weight.clone()
    groups = models.param_groups(model, 0.05, body_factor=0.1)
    hist = train.fit(model, batches(toy.train), epochs=1, lr=0.05, groups=groups, grad_clip=1.0,
                     label_smoothing=0.1, device="cpu", progress=False)
    assert hist.diverged is None and torch.equal(frozen, model.layer1[0].conv1.weight)


def test_nothing_to_train_is_a_clear_error(toy):
    model = models.freeze(small_model(), "head")
    with pytest.raises(ValueError, match="every parameter is frozen"):
        train.fit(model, batches(toy.train), epochs=1, device="cpu", progress=False)


def test_divergence_stops_with_a_reason_and_keeps_history(toy, capsys):
    model = small_model()
    hist = train.fit(model, batches(toy.train), epochs=3, lr=1e6, schedule="constant", device="cpu", progress=False)
    assert hist.diverged is not None and "learning rate is most likely too high" in hist.diverged
    assert len(hist) < 3
    assert "too high" in capsys.readouterr().out


def test_a_diverged_run_reports_its_step_never_an_accuracy(toy):
    seen = []
    hist = train.fit(small_model(), batches(toy.train), batches(toy.test, shuffle=False), epochs=3, lr=1e6,
                     schedule="constant", device="cpu", progress=False, callback=seen.append)
    assert len(hist) == 0 and hist.best_val_acc is None  # diverged in epoch 1, of 6 steps (4 x 48 images, batch 32)
    assert isinstance(hist.diverged_step, int) and 1 <= hist.diverged_step <= 6
    assert hist.status() == f"diverged at step {hist.diverged_step} (epoch 1)"
    assert seen == [hist]  # the callback (a live plot) hears of it
    assert train.History.from_dict(hist.to_dict()).diverged_step == hist.diverged_step


def test_status_names_the_best_epoch():
    hist = train.History([{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.812}, {"epoch": 3, "val_acc": 0.8}])
    assert hist.best_val_acc == 0.812
    assert hist.status() == "best validation accuracy 81.2% at epoch 2"
    hist.diverged, hist.diverged_step = "Training stopped: ...", 37
    assert hist.best_val_acc is None and hist.status() == "diverged at step 37 (epoch 4)"
    assert train.History().best_val_acc is None and train.History().status() == "not trained"
    assert train.History([{"epoch": 1, "train_loss": 1.0}]).status() == "no validation data"


def test_a_short_run_reports_its_best_epoch(toy):
    hist = train.fit(small_model(), batches(toy.train), batches(toy.test, shuffle=False), epochs=2, lr=0.02,
                     device="cpu", progress=False)
    assert hist.diverged_step is None and hist.best_val_acc == max(hist["val_acc"])
    assert hist.status() == f"best validation accuracy {100 * hist.best_val_acc:.1f}% at epoch {hist.best_epoch}"


def test_plot_history_marks_a_divergence_in_red():
    from course_lib import plots

    hist = train.History([{"epoch": 1, "train_loss": 2.0, "train_acc": 0.3, "val_loss": 1.9, "val_acc": 0.35}],
                         diverged="Training stopped: ...", diverged_step=7)
    fig = plots.plot_history(hist)
    ax_loss = fig.axes[0]
    marks = [line for line in ax_loss.get_lines() if line.get_label() == "diverged at step 7 (epoch 2)"]
    assert len(marks) == 1 and marks[0].get_color() == "crimson" and list(marks[0].get_xdata()) == [2, 2]
    assert ax_loss.get_title() == "diverged at step 7 (epoch 2)"


def test_evaluate_confusion_and_per_class(toy):
    model = small_model()
    ev = train.evaluate(model, batches(toy.test, shuffle=False), device="cpu")
    assert ev.confusion.sum() == len(toy.test) and ev.confusion.shape == (4, 4)
    assert ev.accuracy == pytest.approx(ev.confusion.diag().sum().item() / len(toy.test))
    assert torch.allclose(ev.probabilities.sum(1), torch.ones(len(toy.test)), atol=1e-5)
    assert ev.per_class_accuracy.shape == (4,)
    pairs = ev.most_confused(toy.test.classes, k=3)
    assert all(t != p for t, p, _ in pairs) and [n for *_, n in pairs] == sorted([n for *_, n in pairs], reverse=True)


def test_checkpoint_resume_matches_an_uninterrupted_run(toy, tmp_path):
    kw = dict(epochs=3, lr=0.05, device="cpu", progress=False, keep_best=False)
    straight = small_model()
    train.fit(straight, batches(toy.train, seed=5), batches(toy.test, shuffle=False), **kw)

    def interrupt(history):
        if len(history) == 2:
            raise KeyboardInterrupt

    first = small_model()
    with pytest.raises(KeyboardInterrupt):
        train.fit(first, batches(toy.train, seed=5), batches(toy.test, shuffle=False),
                  checkpoint=tmp_path / "run.pt", callback=interrupt, **kw)
    resumed = small_model()
    hist = train.fit(resumed, batches(toy.train, seed=5), batches(toy.test, shuffle=False),
                     checkpoint=tmp_path / "run.pt", resume=True, **kw)
    assert len(hist) == 3
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        if a.is_floating_point():
            assert torch.allclose(a, b, atol=1e-5), name


def test_resuming_another_models_checkpoint_says_what_differs(toy, tmp_path):
    kw = dict(epochs=1, lr=0.05, device="cpu", progress=False, checkpoint=tmp_path / "run.pt")
    train.fit(small_model(num_classes=4), batches(toy.train), **kw)
    with pytest.raises(ValueError) as e:
        train.fit(small_model(num_classes=3), batches(toy.train), resume=True, **kw)
    assert str(tmp_path / "run.pt") in str(e.value)
    assert "written for another model (2 weights differ, e.g. fc.weight: (4, 512) there, (3, 512) here)" in str(e.value)
    assert "delete the file or pass resume=False" in str(e.value)


def test_resuming_a_checkpoint_of_another_length_says_both_lengths(toy, tmp_path):
    kw = dict(lr=0.05, device="cpu", progress=False, checkpoint=tmp_path / "run.pt")
    train.fit(small_model(), batches(toy.train), epochs=1, **kw)  # 4 x 48 images in batches of 32: 6 steps
    with pytest.raises(ValueError, match="it was written for 1 epoch of 6 steps, this run has 3 epochs of 6 steps"):
        train.fit(small_model(), batches(toy.train), epochs=3, resume=True, **kw)
    with pytest.raises(ValueError, match="it was written for 1 epoch of 6 steps, this run has 1 epoch of 12 steps"):
        train.fit(small_model(), batches(toy.train, bs=16), epochs=1, resume=True, **kw)


def test_resuming_with_other_layers_frozen_or_a_damaged_file_is_a_clear_error(toy, tmp_path):
    kw = dict(epochs=1, lr=0.05, device="cpu", progress=False, checkpoint=tmp_path / "run.pt")
    train.fit(small_model(), batches(toy.train), **kw)
    with pytest.raises(ValueError, match="its optimizer had other parameter groups"):
        train.fit(models.freeze(small_model(), "layer2"), batches(toy.train), resume=True, **kw)
    whole = (tmp_path / "run.pt").read_bytes()
    (tmp_path / "run.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="run.pt: it is not a readable checkpoint, perhaps damaged or cut short"):
        train.fit(small_model(), batches(toy.train), resume=True, **kw)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "ckpts" / "ckpt.pt"
    train.save_checkpoint(target, small_model())
    good = target.read_bytes()

    def crash(obj, path):
        open(path, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        train.save_checkpoint(target, small_model())
    assert target.read_bytes() == good and [p.name for p in target.parent.iterdir()] == ["ckpt.pt"]


def test_lr_find_sweeps_and_suggests_within_range(toy):
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train.lr_find(model, batches(toy.train), start_lr=1e-4, end_lr=10, steps=30, device="cpu", progress=False)
    assert len(result.lrs) == len(result.losses) > 10
    assert all(b > a for a, b in zip(result.lrs, result.lrs[1:]))
    assert result.suggestion is not None and 1e-4 <= result.suggestion <= 10  # an untrained model descends
    after_noise = result.losses[train.noise_steps(len(result.losses)):]
    assert result.lowest_loss_lr == result.lrs[result.losses.index(min(after_noise))]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_lr_find_times_its_steps_after_the_first(toy, monkeypatch):
    """Lesson 3 plans its epochs from the sweep's speed. On a fake clock each step takes 50 ms, the first one
    1.5 s (a slow warm-up step that must not count)."""
    now = [0.0]
    monkeypatch.setattr(train.time, "perf_counter", lambda: now[0])
    model = small_model()
    pauses = iter([1.5])
    model.register_forward_pre_hook(lambda module, args: now.__setitem__(0, now[0] + next(pauses, 0.05)))
    result = train.lr_find(model, batches(toy.train, bs=16), start_lr=1e-4, end_lr=1e-3, steps=9, device="cpu",
                           progress=False)
    assert len(result.losses) == 9
    assert result.images_per_s == pytest.approx(16 / 0.05)  # 8 timed steps of 16 images, 50 ms each
    single = train.lr_find(small_model(), batches(toy.train), steps=1, device="cpu", progress=False)
    assert single.images_per_s is None  # the one step warmed up: nothing was timed


def test_suggest_lr_finds_the_steepest_descent():
    lrs = [10 ** (-4 + i * 0.1) for i in range(40)]
    losses = [2.0 - 1.5 / (1 + math.exp(-(i - 20) / 2)) + (0.1 * (i - 32) ** 2 if i > 32 else 0) for i in range(40)]
    assert lrs[18] <= train.suggest_lr(lrs, losses) <= lrs[22]


def test_suggest_lr_finds_no_descent_in_a_loss_that_only_rises():
    """A warmed-up model's sweep: the smoothed loss is lowest at its first steps and then only rises. The
    old rule named the second rate 'steepest descent'."""
    lrs = [10 ** (-5 + i * 0.1) for i in range(60)]
    rising = [1.0 + 0.002 * i + 0.001 * i * i for i in range(60)]
    assert train.suggest_lr(lrs, rising) is None
    noisy_start = [1.3, 0.9, 1.0] + rising[3:]  # a dip among the first batches is noise, not a descent
    assert train.suggest_lr(lrs, noisy_start) is None
    shallow = [1.0 - 0.0003 * i for i in range(40)] + [0.988 + 0.05 * i for i in range(20)]  # falls 1.2%: noise
    assert train.suggest_lr(lrs, shallow) is None
    real = [1.0 - 0.001 * i for i in range(40)] + [0.96 + 0.05 * i for i in range(20)]  # falls 4%
    assert train.suggest_lr(lrs, real) is not None


def test_predict_image_files_of_any_size(tmp_path, toy):
    from PIL import Image
    model = small_model()
    for i, size in enumerate([(50, 80), (32, 32), (200, 120)]):
        Image.new("RGB", size, (40 * i, 100, 200)).save(tmp_path / f"{i}.png")
    out = train.predict(model, sorted(tmp_path.glob("*.png")), toy.train.classes, device="cpu", top=2)
    assert len(out) == 3 and all(len(o) == 2 and o[0][1] >= o[1][1] for o in out)


def test_feature_cache_hit_miss_and_invalidation(toy, monkeypatch):
    features.clear_memory_cache()
    monkeypatch.setenv(train.CPU_BF16_ENV, "0")  # fp32, to compare with the network's own output (bf16: next tests)
    train.cpu_bf16_faster.cache_clear()
    model = small_model()
    f1 = features.extract_features(model, toy.train, device="cpu", progress=False)
    assert f1.shape == (len(toy.train), 512)
    assert torch.allclose(f1, models.body_upto(model.eval(), "layer4")(data.Batches(toy.train, 1000).transform(toy.train.images)), atol=1e-4)
    calls = []
    real = models.body_upto
    monkeypatch.setattr(features, "body_upto", lambda *a: calls.append(1) or real(*a))
    assert torch.equal(features.extract_features(model, toy.train, device="cpu", progress=False), f1)  # memory
    features.clear_memory_cache()
    assert torch.equal(features.extract_features(model, toy.train, device="cpu", progress=False), f1)  # disk
    with torch.no_grad():
        model.layer1[0].conv1.weight.mul_(2)  # new weights: a new key, recomputed
    f2 = features.extract_features(model, toy.train, device="cpu", progress=False)
    assert not torch.allclose(f1, f2)
    f3 = features.extract_features(model, toy.train, upto="layer3", device="cpu", progress=False)
    assert f3.shape == (len(toy.train), 256, 2, 2)


def test_a_damaged_feature_cache_is_rebuilt_and_says_so(toy, isolated_data_dir, capsys):
    features.clear_memory_cache()
    model = small_model()
    first = features.extract_features(model, toy.train, device="cpu", progress=False)
    cache = next((isolated_data_dir / "cache" / "features").glob("*.pt"))
    cache.write_bytes(b"broken")
    features.clear_memory_cache()
    capsys.readouterr()
    assert torch.equal(features.extract_features(model, toy.train, device="cpu", progress=False), first)
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 1 and said[0].startswith(f"The feature cache {cache} is damaged (")
    assert said[0].endswith("); deleting it and computing the features again to rebuild it.")
    assert torch.equal(torch.load(cache, weights_only=True)["features"], first)
    blob = torch.load(cache, weights_only=True)  # a cache that loads but whose numbers were changed
    blob["features"][0, 0] += 1.0
    torch.save(blob, cache)
    features.clear_memory_cache()
    capsys.readouterr()
    assert torch.equal(features.extract_features(model, toy.train, device="cpu", progress=False), first)
    assert "does not match its checksum" in capsys.readouterr().out


def test_linear_probe_on_cached_features(toy):
    model = small_model()
    body = model.layer2[0].conv1.weight.clone()
    hist = features.fit_head(model, toy.train, toy.test, epochs=20, lr=0.05, batch_size=32, normalize=None,
                             device="cpu", progress=False)
    assert hist["train_acc"][-1] > 0.8 and "val_acc" in hist.last
    assert torch.equal(body, model.layer2[0].conv1.weight) and models.frozen_depth(model) == models.STAGES.index("head")


def test_step_throughput_times_real_steps_after_a_warm_up_batch():
    model = models.freeze(models.build_resnet18(3), "layer4")
    frozen, head = model.layer4[0].conv1.weight.clone(), model.fc.weight.clone()
    batch = (torch.randn(4, 3, 32, 32), torch.randint(0, 3, (4,)))
    pulled = []

    def batches():
        for i in range(10):
            pulled.append(i)
            yield batch

    assert train.step_throughput(model, batches(), device="cpu", max_batches=3) > 0
    assert len(pulled) == 4  # the warm-up batch, then three timed ones
    assert torch.equal(frozen, model.layer4[0].conv1.weight) and not torch.equal(head, model.fc.weight)
    with pytest.raises(ValueError, match="at least two batches"):
        train.step_throughput(model, [batch], device="cpu")


def test_history_plot_gives_train_and_validation_one_colour_each():
    from course_lib import plots

    h = train.History([{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_acc": 0.1 * e, "val_acc": 0.09 * e}
                       for e in (1, 2)])
    fig = plots.plot_history(h)
    colours = [{line.get_label(): line.get_color() for line in ax.get_lines()} for ax in fig.axes]
    assert colours[0]["train"] == colours[1]["train (augmented)"]
    assert colours[0]["validation"] == colours[1]["validation"] != colours[0]["train"]


def test_a_blow_up_in_an_epochs_last_step_is_caught_on_validation(toy):
    """The training-loss check runs before each step, so only validation can see the last step's damage."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
    one_step = data.Batches(toy.train, len(toy.train), shuffle=True, normalize=None, seed=0)  # one step per epoch
    hist = train.fit(model, one_step, batches(toy.test, shuffle=False), epochs=2, lr=1e38, momentum=0.0,
                     weight_decay=0.0, schedule="constant", device="cpu", progress=False)
    assert hist.diverged is not None and "validation loss became" in hist.diverged and "after epoch 1" in hist.diverged
    assert len(hist) == 0 and hist.best_val_acc is None and hist.status() == "diverged at step 1 (epoch 1)"


def test_a_large_but_finite_validation_loss_is_not_called_a_divergence(toy, monkeypatch):
    """From scratch at a high rate, BatchNorm's running statistics lag and validation losses spike (900 and more
    were seen in lesson 2's from-scratch runs): that is not a divergence."""
    real_evaluate = train.evaluate

    def spiking(*args, **kwargs):
        ev = real_evaluate(*args, **kwargs)
        ev.loss = 1e4
        return ev

    monkeypatch.setattr(train, "evaluate", spiking)
    hist = train.fit(small_model(), batches(toy.train), batches(toy.test, shuffle=False), epochs=2, lr=0.02,
                     device="cpu", progress=False)
    assert hist.diverged is None and len(hist) == 2 and hist["val_loss"] == [1e4, 1e4]


def test_difference_noise_is_two_standard_errors_of_a_difference():
    # p = 0.5 on 500 images: one accuracy's standard error is sqrt(0.25 / 500) = 2.24 points, a difference's
    # sqrt(2) times that, two of them 6.3 points; one image in 500 (0.2 points) is far inside it
    assert train.difference_noise(0.5, 500) == pytest.approx(0.0632, abs=1e-4)
    assert train.difference_noise(0.9, 500) < train.difference_noise(0.5, 500)
    assert train.difference_noise(0.5, 5000) == pytest.approx(train.difference_noise(0.5, 500) / 10 ** 0.5)
    # samples of different sizes: 1,000 and 2,000 images at p = 0.45: 2 * sqrt(0.2475 * 0.0015) = 3.85 points
    assert train.difference_noise(0.45, 1000, 2000) == pytest.approx(0.0385, abs=1e-4)
    # two accuracies, each with its own variance: 85.4% and 68.8% on 48 photos each,
    # 2 * sqrt(0.854 * 0.146 / 48 + 0.688 * 0.312 / 48) = 16.8 points, more than the higher one alone gives (14.4)
    assert train.difference_noise(0.854, 48, other_accuracy=0.688) == pytest.approx(0.1682, abs=1e-4)
    assert train.difference_noise(0.854, 48) == pytest.approx(0.1441, abs=1e-4)


def test_bf16_features_on_the_cpu_are_fp32_ones_within_bf16_precision_and_cached_apart(toy, monkeypatch):
    model = small_model()
    features.clear_memory_cache()
    monkeypatch.setenv(train.CPU_BF16_ENV, "0")
    train.cpu_bf16_faster.cache_clear()
    full = features.extract_features(model, toy.train, device="cpu", progress=False)
    monkeypatch.setenv(train.CPU_BF16_ENV, "1")
    train.cpu_bf16_faster.cache_clear()
    half = features.extract_features(model, toy.train, device="cpu", progress=False)
    train.cpu_bf16_faster.cache_clear()
    assert not torch.equal(full, half)  # a cache key of its own: not the fp32 features recalled
    assert half.dtype == torch.float32 and (half - full).abs().max() <= 0.05 * full.abs().max()


def test_training_on_the_cpu_in_bf16_keeps_fp32_weights_and_learns_like_fp32(toy, monkeypatch):
    """bf16 autocast where the CPU has bf16 instructions: the forward pass in bf16, weights and optimizer in fp32."""
    x, y = next(iter(data.Batches(toy.train, 16)))
    losses, grads, runs = {}, {}, {}
    for flag in ("0", "1"):
        monkeypatch.setenv(train.CPU_BF16_ENV, flag)
        train.cpu_bf16_faster.cache_clear()
        context = train.autocast_for(torch.device("cpu"))[0]
        assert (context.__class__.__name__ == "nullcontext") == (flag == "0")
        assert train.autocast_for(torch.device("cpu"), enabled=False)[0].__class__.__name__ == "nullcontext"
        model = small_model().train()
        with context:
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        losses[flag], grads[flag] = loss.item(), model.fc.weight.grad.clone()
        model = small_model()
        runs[flag] = train.fit(model, batches(toy.train), batches(toy.test, shuffle=False), epochs=6, lr=0.02,
                               device="cpu", progress=False)
        assert {p.dtype for p in model.parameters()} == {torch.float32}  # the weights stay fp32
    train.cpu_bf16_faster.cache_clear()
    # one step: the same loss and gradient within bf16's 8-bit mantissa, and not bit-equal (bf16 did run)
    assert losses["1"] == pytest.approx(losses["0"], rel=0.03) and losses["1"] != losses["0"]
    assert (grads["1"] - grads["0"]).norm() < 0.1 * grads["0"].norm()
    for flag, history in runs.items():  # a whole run learns the toy task either way
        assert history.diverged is None and history["train_loss"][-1] < history["train_loss"][0], flag
        assert max(history["val_acc"]) >= 0.75, (flag, history["val_acc"])


def test_predict_is_fp32_whatever_the_cpu_autocast_so_it_matches_an_exported_model(tmp_path, toy, monkeypatch):
    from PIL import Image
    model = small_model()
    Image.new("RGB", (40, 30), (200, 30, 90)).save(tmp_path / "a.png")
    said = {}
    for flag in ("0", "1"):
        monkeypatch.setenv(train.CPU_BF16_ENV, flag)
        train.cpu_bf16_faster.cache_clear()
        said[flag] = train.predict(model, [tmp_path / "a.png"], toy.train.classes, device="cpu", top=4)
    train.cpu_bf16_faster.cache_clear()
    assert said["1"] == said["0"]  # bit for bit: bf16 would move the probabilities in their third digit
