"""Lesson 4 end to end on a learner's folder unlike the demo one: two classes, full-size photos of several MB each
(fast mode, its default weights: ImageNet's)."""
import json

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from course_lib import config, data
from conftest import REAL_CIFAR10

SOURCE = config.PROJECT_ROOT / "source" / "04_your_own_images.ipynb"


def write_full_size_photos(folder, per_class=14, size=(2400, 1800), seed=0):
    """Two classes of camera-sized JPEGs: warm photos with horizontal bands, cool ones with vertical bands, under
    pixel noise that keeps each file several MB, as a phone's are."""
    rng = np.random.default_rng(seed)
    width, height = size
    for name, colour, axis in (("warm things", (200, 90, 40), 0), ("cool things", (40, 110, 200), 1)):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            bands = (np.arange(height if axis == 0 else width) // rng.integers(40, 120)) % 2
            shade = bands[:, None] if axis == 0 else bands[None, :]
            pixels = np.array(colour) * (0.6 + 0.4 * shade[..., None]) + rng.normal(0, 40, (height, width, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / name / f"IMG_{i:04d}.JPG", quality=95)


@pytest.mark.cifar
def test_lesson4_runs_on_two_classes_of_full_size_photos(tmp_path, cifar10_cache_dir, monkeypatch):
    if REAL_CIFAR10 is None:
        pytest.skip(f"real CIFAR-10 copy not found: the lesson's source-model comparison needs it ({data.CIFAR10_ENV})")
    folder = tmp_path / "my photos"
    write_full_size_photos(folder)
    sizes = [f.stat().st_size for f in folder.glob("*/*.JPG")]
    assert len(sizes) == 28 and min(sizes) > 2_000_000  # several MB each

    notebook = nbformat.read(SOURCE, as_version=4)
    load = next(c for c in notebook.cells if "photo_folder = None" in c.source)
    load.source = load.source.replace("photo_folder = None", f"photo_folder = {str(folder)!r}")
    for name, value in dict(COURSE_FAST="1", COURSE_OFFLINE="1", MPLBACKEND="Agg", COURSE_CIFAR10=str(REAL_CIFAR10),
                            COURSE_DATA_DIR=str(cifar10_cache_dir), TORCH_HOME=str(tmp_path / "torch")).items():
        monkeypatch.setenv(name, value)  # the kernel inherits this process's environment
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = {c.get("id"): "".join(o.get("text", "") for o in c.get("outputs", []) if o.get("output_type") == "stream")
            for c in notebook.cells if c.cell_type == "code"}
    assert "Using EfficientNet-Lite0's ImageNet weights" in text["l4-weights"]
    assert "2 classes" in text["l4-load"] and "cool things" in text["l4-load"]
    assert "64 px" in text["l4-plan"]
    shown = [line for line in text["l4-predict-show"].splitlines() if line.startswith("validation_")]
    assert len(shown) == 2  # one photo of each of the two classes
    for line in shown:  # a top-2 of two classes from the learner's function and from the library
        yours, library = line.split(": yours ")[1].split(" | library ")
        assert yours.count("%") == library.count("%") == 2
    assert "probabilities (to 1e-4): True" in text["l4-export"]
    assert not list(folder.rglob("*.ipynb*")) and sorted(p.name for p in folder.iterdir()) == ["cool things", "warm things"]
    json.dumps(notebook)  # every output is plain data
