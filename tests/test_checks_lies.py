"""Objects that lie earn nothing (issue #27, item 6): probes convert strictly (exact number types, tensors as plain
tensors, copied, without running a subclass's __torch_function__), judge a model on a fresh module built from its
state dict, and put their decoy wherever an answer could reach the real function."""
from __future__ import annotations

import pytest
import torch

from course_lib import checks, gd


class Lying(float):
    def __float__(self):
        return 0.07

    def __lt__(self, other):
        return True


def test_a_float_subclass_is_no_learning_rate():
    problem = gd.quadratic_2d(curvatures=(1.0, 20.0), angle_deg=45)
    checks.check_converging_lr(0.07, problem, (-2.0, 3.0), steps=150)
    with pytest.raises(AssertionError, match="should be a positive number"):
        checks.check_converging_lr(Lying(5.0), problem, (-2.0, 3.0), steps=150)


class Says(torch.Tensor):
    """A tensor whose every torch operation answers 0.5, whatever it holds."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.item,):
            return 0.5
        return super().__torch_function__(func, types, args, kwargs or {})


def test_tensor_subclasses_are_read_as_plain_tensors():
    lying = torch.tensor([0.25]).as_subclass(Says)
    assert lying.item() == 0.5  # what it says
    assert checks._scalar(lying) == 0.25  # what it holds
    assert checks._float_list(torch.tensor([[1.0, 2.0]]).as_subclass(Says)) == {"shape": [1, 2], "values": [1.0, 2.0]}
    with pytest.raises(TypeError):
        checks._scalar(True)


def test_a_model_whose_forward_lies_is_judged_on_its_weights():
    class Fitted(torch.nn.Linear):
        """Untrained weights; a forward that returns the best line's predictions."""

        def forward(self, x):
            w, b = gd.least_squares(x, self.y)
            return x * w + b

    def train_linear(x, y, lr, steps):
        model = Fitted(1, 1)
        model.y = y
        return model

    with pytest.raises(AssertionError, match="parameters never moved"):
        checks.check_training_loop(train_linear)


def test_keep_best_cannot_reach_the_test_set_past_the_decoy():
    namespace = {"checks": checks, "torch": torch}
    exec("import types\n"
         "def evaluate_on_test(model):\n    return types.SimpleNamespace(accuracy=0.0, loss=1.0)\n"
         "ALIAS = evaluate_on_test\n"
         "def keep_best(model, train_one_epoch, val_accuracy, epochs, test=evaluate_on_test):\n"
         "    import copy\n    best = (0, -1.0, None)\n"
         "    for epoch in range(1, epochs + 1):\n"
         "        train_one_epoch(model)\n        test(model)\n        acc = val_accuracy(model)\n"
         "        if acc > best[1]:\n            best = (epoch, acc, copy.deepcopy(model.state_dict()))\n"
         "    model.load_state_dict(best[2])\n    return best[0], best[1]\n", namespace)
    with pytest.raises(AssertionError, match="after calling evaluate_on_test"):
        checks.check_keep_best(namespace["keep_best"])
    assert namespace["keep_best"].__defaults__[0] is namespace["evaluate_on_test"]  # put back afterwards
    assert namespace["ALIAS"] is namespace["evaluate_on_test"]
