"""Time budgets: how many epochs fit on this machine, planned from its measured speed before training starts,
so that a lesson keeps its time promise on a slow laptop and still uses a fast machine fully. Laptops of one
"class" differ in speed by 2x and more, so a fixed number of epochs cannot promise a time.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

# An image evaluated costs a fraction of an image trained on (a forward pass, no backward pass and no
# optimizer step, in larger batches). Lesson 3's normal-mode run on a 2-core CPU evaluated 10-12x faster than
# it trained; 6 errs towards planning fewer epochs, not more.
EVAL_SPEEDUP = 6

# A margin on the planned time of a training epoch, against the machine's speed wandering. Planned from lesson 3's
# section 2 dozen timed steps alone (with 1.2 here then), its normal-mode epochs on a 2-core CPU took 1.2x the
# plan in one run and 0.73x in another (2026-11-29): a few steps on a shared CPU are noise. Lesson 3 now revises
# its plan from the learning-rate sweep's tens of steps, after which fit's epochs took about what those steps
# predict: only a small margin is left.
FIT_OVERHEAD = 1.05
# Lesson 2 plans once, from a few timed steps per strategy, and never revises: with other processes on the
# machine its runs took 1.12x the plan and the lesson 10.8 of its 10 minutes (2026-12-02). Its margin is larger.
UNREVISED_PLAN_OVERHEAD = 1.12


class Clock:
    """Seconds since the clock was made: a lesson makes one in its first cell, so that a plan made later
    knows how much of the budget the cells before it have spent."""

    def __init__(self):
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start


def training_seconds(train_images: int, eval_images: int, images_per_s: float) -> float:
    """Expected seconds to train on `train_images` and evaluate `eval_images` at a measured training speed."""
    return train_images / images_per_s + eval_images / (EVAL_SPEEDUP * images_per_s)


@dataclass(frozen=True)
class Plan:
    """Epochs chosen to fit a budget, and the estimates behind the choice."""

    what: str
    epochs: int
    max_epochs: int
    epoch_seconds: float  # one epoch, its validation included
    other_seconds: float  # what else the budget pays for (spent already, or still to come)
    budget_seconds: float
    per_epoch: str = "one epoch"  # what epoch_seconds pays for, e.g. one epoch of every run of a lesson together

    @property
    def seconds(self) -> float:
        return self.epochs * self.epoch_seconds + self.other_seconds

    @property
    def fits(self) -> bool:
        return self.seconds <= self.budget_seconds

    def describe(self) -> str:
        """The plan in one or two lines, before training, so the learner knows what to expect and why."""
        said = (f"{self.what}: {self.epochs} epoch(s); {self.per_epoch} takes about {self.epoch_seconds / 60:.1f} min, "
                f"≈ {self.epochs * self.epoch_seconds / 60:.0f} min in all on this machine")
        if self.other_seconds:
            said += f" (+ ≈ {self.other_seconds / 60:.0f} min for everything else the budget covers)"
        said += f"; budget {self.budget_seconds / 60:.0f} min"
        if not self.fits:
            return (said + f".\nEven {self.epochs} epoch(s) exceed the budget on this machine: expect about "
                    f"{self.seconds / 60:.0f} min, or raise the budget to train longer.")
        if self.epochs < self.max_epochs:
            full = self.max_epochs * self.epoch_seconds + self.other_seconds
            said += (f".\nThe full recipe's {self.max_epochs} epochs would take ≈ {full / 60:.0f} min here: "
                     "raise the budget to train longer (accuracy usually rises with epochs).")
        return said


def plan_epochs(what: str, epoch_seconds: float, budget_seconds: float, *, max_epochs: int,
                other_seconds: float = 0.0, min_epochs: int = 1, per_epoch: str = "one epoch") -> Plan:
    """As many epochs as fit in what the budget leaves after `other_seconds`, between min_epochs and
    max_epochs (more than the recipe's max_epochs would not help much and a fast machine should not be made
    to spend its whole budget)."""
    if epoch_seconds <= 0 or budget_seconds <= 0:
        raise ValueError(f"a plan needs a positive epoch time and budget, got {epoch_seconds!r} s and "
                         f"{budget_seconds!r} s")
    fitting = math.floor((budget_seconds - other_seconds) / epoch_seconds)
    epochs = max(min_epochs, min(max_epochs, fitting))
    return Plan(what, epochs, max_epochs, epoch_seconds, other_seconds, budget_seconds, per_epoch)


def budget_report(lesson_seconds: float, one_off_seconds: float, budget_minutes: float) -> str:
    """How long a lesson ran against its budget, the one-off time of getting pretrained weights apart
    (`lesson_seconds` includes it; it counts when it is more than half a minute, i.e. when it trained)."""
    minutes = (lesson_seconds - one_off_seconds) / 60
    said = (f"this lesson ran {minutes:.1f} min against its budget of {budget_minutes:g} min "
            f"({'within' if minutes <= budget_minutes else 'over'} it)")
    if one_off_seconds > 30:
        said += f", plus {one_off_seconds / 60:.1f} min getting the pretrained weights (the one-off pretraining)"
    return said
