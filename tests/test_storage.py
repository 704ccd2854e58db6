"""Faults injected on the learner's disk: overwritten bytes in a decoded cache or a checkpoint, a cache that
loads but holds the wrong parts, a full disk (faked, and a real 2 MB tmpfs where one can be mounted), and the
temporary file of a killed writer. Each is named with its file and its fix; no damaged data reaches training."""
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib import config, data, models, storage, train
from course_lib.data import DataError
from course_lib.storage import DamagedFileError, NoSpaceError


def photos(root: Path, side=8) -> tuple[Path, np.ndarray]:
    """train/ and test/ of two classes, photos already `side` px square (so loading changes no pixel), and
    every training pixel as the test reads it with Pillow alone, in the order the loader sorts them."""
    rng = np.random.default_rng(0)
    train_pixels = []
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
                if split == "train":
                    train_pixels.append(pixels.transpose(2, 0, 1))
    return root, np.stack(train_pixels)


def entry_offset(path: Path, size: int) -> int:
    """Where the bytes of the (stored, uncompressed) zip entry of `size` bytes start in a torch.save file."""
    with zipfile.ZipFile(path) as z:
        [info] = [i for i in z.infolist() if "/data/" in i.filename and i.file_size == size]
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
    return info.header_offset + 30 + name_len + extra_len


def overwrite(path: Path, offset: int, new: bytes):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(new)


def one_cache(data_dir: Path) -> Path:
    [cache] = (data_dir / "cache").glob("*.pt")
    return cache


def no_decoding(monkeypatch):
    monkeypatch.setattr(data, "_decode_bytes", lambda *a: pytest.fail("an image was decoded"))


# ------------------------------------------------------------------------------------ damaged caches
@pytest.mark.parametrize("what", ["images", "labels"])
def test_overwritten_bytes_in_the_decoded_cache_are_named_and_the_cache_rebuilt(what, isolated_data_dir, tmp_path,
                                                                                 capsys):
    root, train_pixels = photos(tmp_path / "photos")
    data.load_image_folder(root, size=8, progress=False)
    cache = one_cache(isolated_data_dir)
    n = len(train_pixels)  # the train/ part: images then labels, 6 x 3 x 8 x 8 bytes and 6 x 8 bytes
    offset = entry_offset(cache, n * 3 * 8 * 8 if what == "images" else n * 8)
    overwrite(cache, offset + 5, b"\xff" * 7)
    capsys.readouterr()
    again = data.load_image_folder(root, size=8, progress=False)
    said = capsys.readouterr().out
    assert said == (f"The decoded cache {cache} is damaged (its content does not match its checksum: bytes in it "
                    f"were changed after it was written); deleting it and decoding {root} again to rebuild it.\n")
    everything = torch.cat([again.train.images, again.val.images])[torch.cat([again.train.index, again.val.index]).argsort()]
    assert np.array_equal(everything.numpy(), train_pixels)  # the photos' own pixels, not the damaged ones
    assert torch.equal(torch.cat([again.train.labels, again.val.labels]).sort().values, torch.tensor([0, 0, 0, 1, 1, 1]))
    data.load_image_folder(root, size=8, progress=False)  # the rebuilt cache is whole
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("blob, why", [
    ({}, "its class names or notes are missing"),
    ({"classes": ["cat", "dog"], "notes": ""}, "it holds the entries ['classes', 'notes'], not a decoded source's"),
    ({"classes": ["cat", "dog"], "notes": "", "train_images": torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
      "train_labels": torch.tensor([0, 7]), "test_images": torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
      "test_labels": torch.tensor([1])}, "its train labels are not all class numbers 0 to 1"),
    ({"classes": ["cat", "dog"], "notes": "", "train_images": torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
      "train_labels": torch.tensor([0, 1]), "test_images": torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
      "test_labels": torch.tensor([1])}, "its train part is not 8px uint8 images with one int64 label each"),
])
def test_a_cache_with_a_good_checksum_but_wrong_content_is_the_caches_fault_not_the_sources(
        blob, why, isolated_data_dir, tmp_path, capsys):
    root, _ = photos(tmp_path / "photos")
    data.load_image_folder(root, size=8, progress=False)
    cache = one_cache(isolated_data_dir)
    storage.save_verified(blob, cache)
    capsys.readouterr()
    data.load_image_folder(root, size=8, progress=False)
    assert capsys.readouterr().out == (f"The decoded cache {cache} is damaged ({why}); deleting it and decoding "
                                       f"{root} again to rebuild it.\n")
    data.load_image_folder(root, size=8, progress=False)
    assert capsys.readouterr().out == ""  # rebuilt: the next run reads it without complaint


def test_a_cache_without_checksum_is_rebuilt(isolated_data_dir, tmp_path, capsys):
    root, _ = photos(tmp_path / "photos")
    data.load_image_folder(root, size=8, progress=False)
    cache = one_cache(isolated_data_dir)
    torch.save({}, cache)  # loads fine: the empty dict the issue found blamed on the source
    capsys.readouterr()
    data.load_image_folder(root, size=8, progress=False)
    assert "is damaged (it carries no checksum: it is not a file this version of the course wrote)" in capsys.readouterr().out


def test_a_cifar10_copy_lacking_a_class_is_named_before_decoding_and_nothing_is_cached(isolated_data_dir, tmp_path,
                                                                                      monkeypatch):
    nine = [c for c in data.CIFAR10_CLASSES if c != "frog"]
    for split in ("train", "test"):
        for cls in nine:
            (tmp_path / "cifar10" / split / cls).mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(tmp_path / "cifar10" / split / cls / "0.png")
    no_decoding(monkeypatch)
    with pytest.raises(DataError) as e:
        data.load_cifar10(tmp_path / "cifar10", progress=False)
    assert str(e.value) == (f"{tmp_path / 'cifar10'} holds 9 classes, not CIFAR-10's 10: it lacks frog. "
                            "Re-download or re-copy CIFAR-10.")
    assert not (isolated_data_dir / "cache").exists() or not any((isolated_data_dir / "cache").iterdir())


# ------------------------------------------------------------------------------------ damaged checkpoints
def test_overwritten_bytes_in_a_checkpoint_are_named_with_the_fix(tmp_path):
    model = models.build_resnet18(4)
    path = train.save_checkpoint(tmp_path / "run.pt", model)
    overwrite(path, entry_offset(path, 4 * 512 * 4) + 100, b"\x7f\x7f\x7f\x7f")  # fc.weight: 4 x 512 float32
    with pytest.raises(DamagedFileError) as e:
        train.load_checkpoint(path)
    assert str(e.value) == (f"{path} is not a readable checkpoint, perhaps damaged or cut short: its content does "
                            "not match its checksum: bytes in it were changed after it was written. Delete it and "
                            "train again, or copy it again from where it came from.")
    toy = data.synthetic_splits(n_train=8, n_test=4, num_classes=4)
    with pytest.raises(ValueError, match=f"Cannot resume from {path}: it is not a readable checkpoint, perhaps damaged "
                                         "or cut short: its content does not match its checksum"):
        train.fit(model, data.Batches(toy.train, 8, normalize=None), epochs=1, device="cpu", progress=False,
                  checkpoint=path, resume=True)


# ------------------------------------------------------------------------------------------ a full disk
def fake_free_space(monkeypatch, free: int):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=free))


def test_a_full_disk_is_named_before_decoding(isolated_data_dir, tmp_path, monkeypatch):
    root, _ = photos(tmp_path / "photos")
    fake_free_space(monkeypatch, 200_000)
    no_decoding(monkeypatch)
    with pytest.raises(NoSpaceError) as e:
        data.load_image_folder(root, size=64, progress=False)
    msg = str(e.value)
    needed = float(msg.split(": ")[1].split(" MB needed")[0])
    assert needed * 1e6 >= 10 * 3 * 64 * 64  # at least the 10 decoded images
    assert msg.startswith(f"no space left on {isolated_data_dir / 'cache'}: ")
    assert msg.endswith(" MB needed, 0.2 MB free; free space there, or set COURSE_DATA_DIR to a folder on a disk "
                        "with room (datasets, caches and checkpoints go there)")


def test_a_checkpoint_that_does_not_fit_is_named_and_the_previous_one_kept(tmp_path, monkeypatch):
    path = train.save_checkpoint(tmp_path / "ckpt" / "run.pt", torch.nn.Linear(10, 10))
    before = path.read_bytes()
    fake_free_space(monkeypatch, 5_000_000)
    with pytest.raises(NoSpaceError, match=rf"^no space left on {path.parent}: 17\.\d MB needed, 5\.0 MB free; "):
        train.save_checkpoint(path, torch.nn.Linear(2000, 2000))  # 16 MB of weights
    assert path.read_bytes() == before and os.listdir(path.parent) == ["run.pt"]


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB filesystem (tmpfs), where this user may mount one; else the test is skipped."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)  # lazy: a failed write's file may still be open


def test_a_disk_that_fills_during_a_write_is_named_and_leaves_nothing(small_disk, monkeypatch):
    path = train.save_checkpoint(small_disk / "run.pt", torch.nn.Linear(100, 100))  # 40 kB: fits
    before = path.read_bytes()
    monkeypatch.setattr(storage, "check_space", lambda *a: None)  # the room check misjudged: the write itself fails
    with pytest.raises(NoSpaceError, match=rf"^no space left on {small_disk}: \d\.\d MB needed, "
                                           rf"\d\.\d MB free; free space there, or set COURSE_DATA_DIR") as e:
        train.save_checkpoint(path, torch.nn.Linear(1000, 1000))  # 4 MB: does not
    assert "unexpected pos" in str(e.value.__cause__)  # what torch said: the learner no longer sees it
    assert path.read_bytes() == before and os.listdir(small_disk) == ["run.pt"]


# --------------------------------------------------------------------------------- killed writers
def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom course_lib import storage\n"
        "def write(tmp):\n    tmp.write_bytes(b'x' * 1000)\n    print('writing', flush=True)\n    time.sleep(60)\n"
        f"storage.atomic_write({str(tmp_path / 'run.pt')!r}, write)\n")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(config.PROJECT_ROOT)})
    assert writer.stdout.readline() == "writing\n"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    [left] = tmp_path.glob(".run.pt.*.tmp")
    running = tmp_path / f".run.pt.{os.getpid()}-abc.tmp"  # a write of the same file in progress, by this process
    older = tmp_path / ".run.pt.xyz.tmp"  # an older course's name, untouched for two hours
    others = [tmp_path / ".notes.tmp", tmp_path / ".other.pt.999999999-abc.tmp"]  # not temporaries of run.pt
    for file in [running, older, *others]:
        file.write_bytes(b"y")
    os.utime(older, (time.time() - 7200,) * 2)
    train.save_checkpoint(tmp_path / "run.pt", torch.nn.Linear(2, 2))
    assert not left.exists() and not older.exists() and running.exists() and all(f.exists() for f in others)


def test_a_killed_decodes_temporary_file_is_removed_when_the_source_changed(isolated_data_dir, tmp_path):
    root, _ = photos(tmp_path / "photos")
    data.load_image_folder(root, size=8, progress=False)
    left = isolated_data_dir / "cache" / f".{one_cache(isolated_data_dir).name}.999999999-abc.tmp"  # no such process
    left.write_bytes(b"half a decode")
    os.utime(root / "train" / "cat" / "0.png")  # the source changes: a cache of another name is written
    data.load_image_folder(root, size=8, progress=False)
    assert not left.exists()


def test_a_damaged_shared_decode_is_not_used_and_left_as_it_is(isolated_data_dir, tmp_path, monkeypatch, capsys):
    """The grader's read-only folder is not this learner's to delete: its damaged decode is passed over, and the
    source decoded into the learner's own data folder."""
    root, train_pixels = photos(tmp_path / "photos")
    shared = tmp_path / "shared"
    monkeypatch.setenv(config.DATA_DIR_ENV, str(shared))
    data.load_image_folder(root, size=8, progress=False)
    lent = one_cache(shared)
    overwrite(lent, entry_offset(lent, len(train_pixels) * 3 * 8 * 8) + 3, b"\x00\x01\x02")
    damaged = lent.read_bytes()
    monkeypatch.setenv(config.DATA_DIR_ENV, str(isolated_data_dir))
    monkeypatch.setenv(config.SHARED_DATA_ENV, str(shared))
    capsys.readouterr()
    again = data.load_image_folder(root, size=8, progress=False)
    assert capsys.readouterr().out == (f"The decoded cache {lent} is damaged (its content does not match its checksum: "
                                       f"bytes in it were changed after it was written); decoding {root} again to "
                                       "rebuild it.\n")
    everything = torch.cat([again.train.images, again.val.images])[torch.cat([again.train.index, again.val.index]).argsort()]
    assert np.array_equal(everything.numpy(), train_pixels)
    assert lent.read_bytes() == damaged and one_cache(isolated_data_dir).name == lent.name
