"""The exported model runs in a fresh Python process without course_lib and predicts what the model in
memory predicts, photos of any size and mode prepared the same way."""
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib import export, models, train


def photos(folder):
    """Photos of several sizes and modes, a 16-bit one among them, and one that is not an image."""
    gen = torch.Generator().manual_seed(1)
    paths = []
    for i, (size, mode) in enumerate([((50, 30), "RGB"), ((24, 40), "L"), ((33, 33), "RGBA"), ((70, 45), "RGB")]):
        pixels = torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8, generator=gen).numpy()
        img = Image.fromarray(pixels).convert(mode)
        paths.append(folder / f"photo{i}.png")
        img.save(paths[-1])
    paths.append(folder / "sixteen_bit.png")
    Image.fromarray(np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)).save(paths[-1])
    paths.append(folder / "broken.jpg")
    paths[-1].write_bytes(b"not a photo")
    return paths


@pytest.fixture
def trained_like_model():
    torch.manual_seed(0)
    model = models.build_resnet18(3)
    with torch.no_grad():  # BatchNorm statistics away from their defaults, so a wrong mode shows
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_exported_model_predicts_the_same_in_a_fresh_process(tmp_path, trained_like_model, capsys):
    classes, mean, std = ["ant", "bee", "wasp"], (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    path = export.export_model(trained_like_model, tmp_path / "out" / "model.pt2", classes=classes, size=32,
                               input_size=48, mean=mean, std=std)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt2"]  # no temporary file left behind
    files = photos(tmp_path)
    in_memory = train.predict(trained_like_model, files, classes, size=32, input_size=48, normalize=(mean, std),
                              device="cpu")
    assert capsys.readouterr().out.startswith(f"Not predicted: {files[-1]} is not a readable image (cannot identify")
    fresh = export.predict_in_fresh_process(path, files)
    assert capsys.readouterr().out == (f"Not predicted, not readable images: {files[-1]} (cannot identify image file: "
                                       "not an image, or damaged). Remove or replace them.\n")
    assert fresh[-1] == in_memory[-1] == [] and all(fresh[:-1])  # the broken one costs the others nothing
    assert [[c for c, _ in top] for top in fresh] == [[c for c, _ in top] for top in in_memory]
    for got, want in zip(fresh, in_memory):
        assert [p for _, p in got] == pytest.approx([p for _, p in want], abs=1e-4)
    assert export.read_meta(path) == {**export.read_meta(path), "classes": classes, "size": 32, "input_size": 48,
                                      "mean": list(mean), "std": list(std)}


def test_the_fresh_process_cannot_use_course_lib(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "STANDALONE_PREDICT", "import course_lib.data\n")
    with pytest.raises(RuntimeError, match="failed in a fresh process:\n(.|\n)*ModuleNotFoundError"):
        export.predict_in_fresh_process(tmp_path / "m.pt2", [])


def test_export_leaves_the_model_alone_and_wants_a_pt_name(tmp_path, trained_like_model):
    before = {k: v.clone() for k, v in trained_like_model.state_dict().items()}
    trained_like_model.train()
    export.export_model(trained_like_model, tmp_path / "m.pt2", classes=["a", "b", "c"], size=16, mean=(0, 0, 0),
                        std=(1, 1, 1))
    assert trained_like_model.training
    assert all(torch.equal(before[k], v) for k, v in trained_like_model.state_dict().items())
    with pytest.raises(ValueError, match="a .pt2 name"):
        export.export_model(trained_like_model, tmp_path / "m.onnx", classes=["a"], size=16, mean=(0,) * 3, std=(1,) * 3)


def test_a_failed_write_keeps_the_old_file(tmp_path, trained_like_model, monkeypatch):
    target = tmp_path / "m.pt2"
    target.write_bytes(b"the learner's earlier export")

    original = Path.write_bytes

    def crash(self, data):  # half the archive written, then Ctrl-C
        original(self, data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", crash)
    with pytest.raises(KeyboardInterrupt):
        export.export_model(trained_like_model, target, classes=["a", "b", "c"], size=16, mean=(0,) * 3, std=(1,) * 3)
    assert target.read_bytes() == b"the learner's earlier export"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.pt2")] == []  # no temporary file left


def test_a_damaged_export_is_named_with_the_fix_in_one_line(tmp_path):
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(4, 2))
    path = export.export_model(tiny, tmp_path / "m.pt2", classes=["a", "b"], size=16, mean=(0,) * 3, std=(1,) * 3)
    whole = path.read_bytes()
    cut = tmp_path / "cut.pt2"
    cut.write_bytes(whole[: len(whole) // 2])
    with zipfile.ZipFile(path) as archive:  # the first weights' bytes, stored uncompressed
        [info] = [i for i in archive.infolist() if i.filename.endswith("/weights/weight_0")]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    overwritten = tmp_path / "overwritten.pt2"
    overwritten.write_bytes(whole[:start + 8] + b"\x7f" * 4 + whole[start + 12:])
    fix = "it is damaged, cut short, or not a .pt2 file written by export_model. Copy it again, or export the model again."
    with pytest.raises(ValueError) as e:
        export.read_meta(cut)
    assert str(e.value) == f"{cut} is not a readable exported model (BadZipFile: File is not a zip file): {fix}"
    with pytest.raises(ValueError) as e:
        export.read_meta(overwritten)
    assert str(e.value) == (f"{overwritten} is not a readable exported model (the bytes of "
                            f"{info.filename} are not those written): {fix}")
    with pytest.raises(RuntimeError) as e:  # the standalone script says the same, without a traceback
        export.predict_in_fresh_process(overwritten, [])
    assert str(e.value) == (f"the exported model failed in a fresh process:\n{overwritten} is not a readable exported "
                            f"model (the bytes of {info.filename} are not those written): {fix}")
