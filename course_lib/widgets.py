"""ipywidgets front-ends. Each only wires controls to a plain course_lib function, and keeps its last
result in `.result`, so a test can set a control's value and read what the learner would see."""
from __future__ import annotations

import ipywidgets as W


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
