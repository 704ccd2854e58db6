"""ipywidgets front-ends. Each only wires controls to a plain course_lib function, and keeps its last
result in `.result`, so a test can set a control's value and read what the learner would see."""
from __future__ import annotations

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
    """Lesson 1: learning rate (log slider), steps, start point and momentum for GD on a quadratic.

    Each change reruns gd.run_on and redraws the path and the loss; the status line says
    "converged ..." or "diverged at step k". `.result` is the last gd.Run.
    """

    def __init__(self, f=None, lr: float = 0.05, steps: int = 40, start=(-2.0, 3.0), momentum: float = 0.0):
        from . import gd

        self.f = f if f is not None else gd.quadratic_2d()
        bound = gd.stability_bound(self.f)
        self.lr = W.FloatLogSlider(value=lr, base=10, min=-3, max=0.5, step=0.01, description="learning rate",
                                   readout_format=".3g", continuous_update=False, style={"description_width": "initial"})
        self.steps = W.IntSlider(value=steps, min=1, max=200, description="steps", continuous_update=False)
        self.x0 = W.FloatSlider(value=start[0], min=-4, max=4, step=0.1, description="start θ₁", continuous_update=False)
        self.y0 = W.FloatSlider(value=start[1], min=-4, max=4, step=0.1, description="start θ₂", continuous_update=False)
        self.momentum = W.FloatSlider(value=momentum, min=0, max=0.95, step=0.05, description="momentum",
                                      continuous_update=False)
        self.status = W.HTML()
        self.out = W.Output()
        info = W.HTML(f"largest curvature L = {self.f.largest_curvature:.3g}; plain GD is stable for "
                      f"learning rate &lt; 2/L = <b>{bound:.3g}</b>")
        controls = W.VBox([self.lr, self.steps, self.momentum, W.HBox([self.x0, self.y0])])
        super().__init__([info, controls, self.status, self.out])
        for w in (self.lr, self.steps, self.x0, self.y0, self.momentum):
            w.observe(lambda change: self.update(), names="value")
        self.update()

    def update(self):
        from . import gd

        self.result = gd.run_on(self.f, self.lr.value, self.steps.value, start=(self.x0.value, self.y0.value),
                                momentum=self.momentum.value)
        colour = "crimson" if self.result.diverged else "black"
        self.status.value = f"<span style='color:{colour}'>{self.result.status()}</span>"
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

    The estimate appears before a run starts; a repeat of a (depth, lr) already run is recalled at once;
    a diverged run is reported as such. `.run(depth, lr)` does what the button does (for tests).
    """

    def __init__(self, experiment):
        from .models import STAGES

        self.experiment = experiment
        self.depth = W.IntSlider(value=4, min=0, max=5, description="stages frozen", style={"description_width": "initial"})
        self.lr = W.FloatLogSlider(value=0.01, base=10, min=-4, max=1.5, step=0.1, description="learning rate",
                                   readout_format=".2g", style={"description_width": "initial"})
        self.frozen = W.HTML()
        self.button = W.Button(description="Run", button_style="primary", icon="play")
        self.status = W.HTML()
        self.progress = W.Output()
        self.table = W.HTML()
        self.plot = W.Output()
        self._stages = STAGES
        super().__init__([W.HBox([self.depth, self.lr, self.button]), self.frozen, self.status, self.progress,
                          self.table, self.plot])
        self.depth.observe(lambda change: self._describe(), names="value")
        self.button.on_click(lambda _: self.run(self.depth.value, self.lr.value))
        self._describe()
        self.result = None

    def _describe(self):
        d = self.depth.value
        frozen = ", ".join(self._stages[:d]) or "nothing"
        self.frozen.value = f"frozen: <b>{frozen}</b>; trained: {', '.join(self._stages[d:])}"

    def run(self, depth: int, lr: float) -> dict:
        self.depth.value, self.lr.value = depth, lr
        depth, lr = self.depth.value, self.lr.value  # as the sliders hold them (clamped to their range)
        key = (int(depth), float(f"{lr:.3g}"))
        if key not in self.experiment.runs:
            estimate = self.experiment.estimate_seconds(depth)
            self.status.value = f"running: about {estimate:.0f} s ..."
        with self.progress:
            self.progress.clear_output(wait=True)
            self.result = self.experiment.run(depth, lr)
        r = self.result
        if r["diverged"]:
            self.status.value = (f"<span style='color:crimson'>lr {r['lr']:g} diverged (the loss exploded): "
                                 "try a smaller learning rate</span>")
        else:
            self.status.value = (f"{'recalled' if r['cached'] else 'done'}: {100 * r['test_acc']:.1f}% test accuracy, "
                                 f"{r['trainable_params']:,} trainable parameters, {r['seconds']:.0f} s")
        self._redraw()
        return r

    def _redraw(self):
        rows = self.experiment.table()

        def acc(r):
            return "diverged" if r["diverged"] else f"{100 * r['test_acc']:.1f}%"

        cells = "".join(f"<tr><td>{r['depth']}</td><td>{r['frozen']}</td><td>{r['lr']:g}</td><td>{acc(r)}</td>"
                        f"<td>{r['trainable_params']:,}</td><td>{r['seconds']:.0f}</td></tr>" for r in rows)
        self.table.value = ("<table><tr><th>depth</th><th>frozen</th><th>lr</th><th>test acc</th>"
                            f"<th>trainable params</th><th>seconds</th></tr>{cells}</table>")
        with self.plot:
            self.plot.clear_output(wait=True)
            show(plot_freeze_runs(rows))
