"""ipywidgets front-ends. Each only wires controls to a plain course_lib function, and keeps its last
result in `.result`, so a test can set a control's value and read what the learner would see."""
from __future__ import annotations

import html
import shutil
import tempfile
import weakref
from pathlib import Path

import ipywidgets as W

from .plots import plot_freeze_runs, plot_runs


class WidgetCheck(W.VBox):
    """Lesson 0: a slider whose square appears beside it, proving widgets render and react."""

    def __init__(self):
        self.slider = W.IntSlider(value=3, min=0, max=10, description="x")
        self.label = W.Label()
        super().__init__([W.HBox([self.slider, self.label])])
        self.slider.observe(lambda change: self.update(), names="value")
        self.update()

    def update(self):
        self.result = self.slider.value ** 2
        self.label.value = f"x² = {self.result}  (move the slider: this should change)"


class LearningRateExplorer(W.VBox):
    """Lesson 1: learning rate, steps, start point and momentum for GD on a quadratic.

    The learning rate has two linked sliders: a log slider for the whole range (crawl to blow-up) and a
    fine one for lr as a multiple of the stability bound 2(1 + μ)/L, to cross the bound in small steps.
    The bounds line shows 2/L and, for the current momentum, 2(1 + μ)/L. Each change reruns gd.run_on and
    redraws the path and the loss; the status line says "converged ..." or "diverged at step k".
    `.result` is the last gd.Run.
    """

    def __init__(self, f=None, lr: float = 0.05, steps: int = 40, start=(-2.0, 3.0), momentum: float = 0.0):
        from . import gd

        self.f = f if f is not None else gd.quadratic_2d()
        slider_options = dict(layout=W.Layout(width="560px"), style={"description_width": "150px"},
                              continuous_update=False)  # long tracks, aligned
        self.lr = W.FloatLogSlider(value=lr, base=10, min=-3, max=0.5, step=0.001, description="learning rate",
                                   readout_format=".4g", **slider_options)
        self.fraction = W.FloatSlider(value=lr / gd.stability_bound(self.f, momentum), min=0.0, max=1.5,
                                      step=0.001, description="lr ÷ bound", readout_format=".3f", **slider_options)
        self.steps = W.IntSlider(value=steps, min=1, max=200, description="steps", **slider_options)
        self.momentum = W.FloatSlider(value=momentum, min=0, max=0.95, step=0.05, description="momentum μ",
                                      **slider_options)
        self.x0 = W.FloatSlider(value=start[0], min=-4, max=4, step=0.1, description="start θ₁", **slider_options)
        self.y0 = W.FloatSlider(value=start[1], min=-4, max=4, step=0.1, description="start θ₂", **slider_options)
        self.bounds = W.HTML()
        self.status = W.HTML()
        self.out = W.Output()
        self._linking = False
        super().__init__([self.bounds, self.lr, self.fraction, self.momentum, self.steps, self.x0, self.y0,
                          self.status, self.out])
        self.lr.observe(lambda change: self._lr_moved(), names="value")
        self.fraction.observe(lambda change: self._fraction_moved(), names="value")
        self.momentum.observe(lambda change: self._lr_moved(), names="value")  # same lr, new bound
        for w in (self.steps, self.x0, self.y0):
            w.observe(lambda change: self.update(), names="value")
        self.update()

    def bound(self) -> float:
        """2(1 + μ)/L at the current momentum: the unit of the fine slider."""
        from . import gd

        return gd.stability_bound(self.f, self.momentum.value)

    def _set_linked(self, slider, value: float) -> None:
        """Move the other lr slider without its observer moving this one back."""
        self._linking = True
        try:
            slider.value = value
        finally:
            self._linking = False

    def _lr_moved(self) -> None:
        if not self._linking:
            self._set_linked(self.fraction, self.lr.value / self.bound())
            self.update()

    def _fraction_moved(self) -> None:
        if not self._linking:
            self._set_linked(self.lr, self.fraction.value * self.bound())
            self.update()

    def update(self):
        from . import gd

        L, mu = self.f.largest_curvature, self.momentum.value
        self.bounds.value = (f"largest curvature L = {L:.3g}. Stable for learning rate &lt; 2/L = "
                             f"<b>{gd.stability_bound(self.f):.4g}</b> (plain GD); with momentum μ = {mu:g}, "
                             f"&lt; 2(1+μ)/L = <b>{self.bound():.4g}</b>")
        self.result = gd.run_on(self.f, self.lr.value, self.steps.value, start=(self.x0.value, self.y0.value),
                                momentum=mu)
        colour = "crimson" if self.result.diverged else "black"
        self.status.value = (f"<span style='color:{colour}'>lr = {self.lr.value:.4g} = "
                             f"{self.lr.value / self.bound():.4g} × bound: {self.result.status()}</span>")
        with self.out:
            self.out.clear_output(wait=True)
            fig = plot_runs(self.f, [self.result])
            show(fig)


def show(fig):
    """Display a figure inside a widget's Output area and release it (no duplicate inline copy)."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    display(fig)
    plt.close(fig)


class FreezeExplorer(W.VBox):
    """Lesson 2: freeze depth and learning rate, a Run button, and a growing comparison of runs.

    Runs are judged on validation accuracy. The estimate appears before a run starts; a repeat of a
    (depth, lr) already run is recalled at once; a diverged run is reported as such. "Test the best run"
    measures test accuracy once, for the run with the best validation accuracy, and says so.
    `.run(depth, lr)` and `.test_best()` do what the buttons do (for tests).
    """

    def __init__(self, experiment, test_data=None):
        from .models import STAGES

        self.experiment, self.test_data = experiment, test_data
        self.depth = W.IntSlider(value=4, min=0, max=5, description="stages frozen", style={"description_width": "initial"})
        self.lr = W.FloatLogSlider(value=0.01, base=10, min=-4, max=1.5, step=0.1, description="learning rate",
                                   readout_format=".2g", style={"description_width": "initial"})
        self.frozen = W.HTML()
        self.button = W.Button(description="Run", button_style="primary", icon="play")
        self.test_button = W.Button(description="Test the best run", icon="flag-checkered",
                                    disabled=test_data is None)
        self.status = W.HTML()
        self.progress = W.Output()
        self.table = W.HTML()
        self.test_result = W.HTML()
        self.plot = W.Output()
        self._stages = STAGES
        note = W.HTML("<small>Every run made with this experiment appears here; runs made by later cells appear "
                      "when they call <code>refresh()</code> (exercise 6's sweep does).</small>")
        super().__init__([W.HBox([self.depth, self.lr, self.button, self.test_button]), self.frozen, self.status,
                          self.progress, self.table, note, self.test_result, self.plot])
        self.depth.observe(lambda change: self._describe(), names="value")
        self.button.on_click(lambda _: self.run(self.depth.value, self.lr.value))
        self.test_button.on_click(lambda _: self.test_best())
        self._describe()
        self.result = None
        self._redraw()

    def _describe(self):
        d = self.depth.value
        frozen = ", ".join(self._stages[:d]) or "nothing"
        self.frozen.value = f"frozen: <b>{frozen}</b>; trained: {', '.join(self._stages[d:])}"

    def run(self, depth: int, lr: float) -> dict:
        self.depth.value, self.lr.value = depth, lr
        depth, lr = self.depth.value, self.lr.value  # as the sliders hold them (clamped to their range)
        if self.experiment.key(depth, lr) not in self.experiment.runs:
            estimate = self.experiment.estimate_seconds(depth)
            self.status.value = f"running: about {estimate:.0f} s on this machine when it is not busy ..."
        with self.progress:
            self.progress.clear_output(wait=True)
            self.result = self.experiment.run(depth, lr)
        r = self.result
        if r["diverged"]:
            self.status.value = (f"<span style='color:crimson'>lr {r['lr']:g}: {r['diverged']} (the loss exploded); "
                                 "try a smaller learning rate</span>")
        else:
            self.status.value = (f"{'recalled' if r['cached'] else 'done'}: {100 * r['val_acc']:.1f}% validation "
                                 f"accuracy, {r['trainable_params']:,} trainable parameters, {r['seconds']:.0f} s")
        self._redraw()
        return r

    def test_best(self) -> float | None:
        """Test accuracy of the best run on validation: the number to report once you stop exploring."""
        best = self.experiment.best()
        if best is None or self.test_data is None:
            self.test_result.value = "No run to test yet." if best is None else "No test images were given."
            return None
        acc = self.experiment.test(best["depth"], best["lr"], self.test_data)
        self.test_result.value = (f"<b>test accuracy {100 * acc:.1f}%</b> for the run chosen on validation "
                                  f"(depth {best['depth']}, lr {best['lr']:g}, validation {100 * best['val_acc']:.1f}%). "
                                  "Report this number; choosing again after seeing it would make it a validation number.")
        return acc

    def refresh(self):
        """Redraw the table and plot from the experiment, after runs made outside the widget (a later cell)."""
        self._redraw()

    def _redraw(self):
        rows = self.experiment.table()

        def acc(r):
            return "diverged" if r["diverged"] else f"{100 * r['val_acc']:.1f}%"

        pad = "style='padding:2px 10px; text-align:right'"
        cells = "".join(f"<tr><td {pad}>{r['depth']}</td><td {pad}>{r['frozen']}</td><td {pad}>{r['lr']:g}</td>"
                        f"<td {pad}>{acc(r)}</td><td {pad}>{r['trainable_params']:,}</td><td {pad}>{r['seconds']:.0f}</td></tr>"
                        for r in rows)
        head = "".join(f"<th {pad}>{h}</th>" for h in ("depth", "frozen", "lr", "validation acc", "trainable params", "seconds"))
        self.table.value = f"<table><tr>{head}</tr>{cells}</table>" if rows else ""
        if rows:
            with self.plot:
                self.plot.clear_output(wait=True)
                show(plot_freeze_runs(rows))


class PhotoPredictor(W.VBox):
    """Lesson 4: upload a photo, or type a file's path, and see the model's top classes with their
    probabilities. `predict(path)` is the plain function that does the work (a list of (class, p));
    `.result` is its last answer, or the error message shown instead."""

    def __init__(self, predict):
        self.predict, self._folder = predict, Path(tempfile.mkdtemp(prefix="uploaded-photos-"))
        # uploads are copies: removed with the widget (close()) or, at the latest, when the kernel exits
        self._remove_uploads = weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload a photo",
                                   layout=W.Layout(width="auto"))  # the default width cuts the words short
        self.path = W.Text(placeholder="or the path of an image file", layout=W.Layout(width="420px"))
        self.button = W.Button(description="predict")
        self.answer = W.HTML()
        super().__init__([W.HBox([self.upload, self.path, self.button]), self.answer])
        self.upload.observe(lambda change: self._uploaded(), names="value")
        self.button.on_click(lambda _: self.show(self.path.value.strip()))
        self.result = None

    def close(self):
        self._remove_uploads()
        super().close()

    def _uploaded(self):
        if self.upload.value:
            file = self.upload.value[0]
            saved = self._folder / Path(file["name"]).name  # the name only: never a path outside this folder
            saved.write_bytes(bytes(file["content"]))
            self.show(str(saved))

    def show(self, path: str):
        from .data import DataError

        try:
            self.result = self.predict(path)
        except DataError as e:
            self.result = str(e)
            self.answer.value = f"<b>{html.escape(self.result)}</b>"
            return
        rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{100 * p:.1f}%</td>"
                       f"<td><div style='background:#4c78a8;width:{200 * p:.0f}px;height:10px'></div></td></tr>"
                       for name, p in self.result)
        self.answer.value = f"<p>{html.escape(Path(path).name)}</p><table>{rows}</table>"
