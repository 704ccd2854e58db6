"""Every image format read right, or refused by name with the fix: 16-bit and float pixels scaled (not clipped to
white), palette transparency on white, decompression bombs refused before decoding, huge JPEGs decoded at a
reduced scale, class folders spelled in either Unicode normalisation, and one bad photo not costing the others
their prediction. Expected pixels are computed here with numpy from the values written."""
import struct
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from course_lib import data, export, images, models, train
from course_lib.data import DataError

RAMP16 = np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)  # every 16th value of 0..65535, 64 x 64


def photo(path: Path, img: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def png_header(path: Path, width: int, height: int) -> Path:
    """A grayscale PNG that declares width x height pixels (its pixel data is cut short: Pillow refuses it from
    the header alone, as it does a real one, which would take minutes to compress)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b""))
    return path


def rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[None], 3, axis=0)


def standalone_pixels(path: Path, size: int) -> np.ndarray:
    """What the exported model's own preparation (STANDALONE_PREDICT, torch and Pillow alone) makes of a photo."""
    namespace = {"__name__": "standalone"}
    exec(export.STANDALONE_PREDICT, namespace)
    return (namespace["photo_pixels"](path, size)[0] * 255).round().byte().numpy()


def no_decoding(monkeypatch):
    monkeypatch.setattr(data, "_decode_bytes", lambda *a: pytest.fail("an image was decoded"))


# ------------------------------------------------------------------------------------ bit depths, modes
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grayscale_is_scaled_not_clipped_in_training_and_in_the_export(tmp_path, suffix):
    path = photo(tmp_path / f"ramp{suffix}", Image.fromarray(RAMP16))
    assert Image.open(path).mode == "I;16"
    expected = rgb(np.round(RAMP16 / 65535 * 255).astype(np.uint8))
    got = data.decode_image_file(path, 64).numpy()
    assert np.array_equal(got, expected)
    assert (got == 255).mean() < 0.01  # it was 99.6% white
    assert np.array_equal(standalone_pixels(path, 64), expected)


def test_32_bit_integer_and_float_grayscale_are_scaled(tmp_path):
    ints = RAMP16.astype(np.int32)
    floats = (RAMP16 / 65535).astype(np.float32)
    as_int = photo(tmp_path / "int.tif", Image.fromarray(ints))
    as_float = photo(tmp_path / "float.tif", Image.fromarray(floats))
    assert (Image.open(as_int).mode, Image.open(as_float).mode) == ("I", "F")
    assert np.array_equal(data.decode_image_file(as_int, 64).numpy(), rgb(np.round(ints / 257).astype(np.uint8)))
    want = rgb(np.round(floats.astype(np.float64) * 255).astype(np.uint8))
    assert np.abs(data.decode_image_file(as_float, 64).numpy().astype(int) - want).max() <= 1  # float32 rounding
    assert np.array_equal(standalone_pixels(as_float, 64), data.decode_image_file(as_float, 64).numpy())


def test_a_palette_image_with_a_transparent_colour_is_placed_on_white(tmp_path):
    indices = np.zeros((8, 8), dtype=np.uint8)
    indices[:, 4:] = 1
    img = Image.fromarray(indices, mode="P")
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    path = tmp_path / "pal.png"
    img.save(path, transparency=0)  # palette entry 0 is transparent
    expected = np.empty((3, 8, 8), dtype=np.uint8)
    expected[:, :, :4] = 255
    expected[:, :, 4:] = np.array([200, 100, 50])[:, None, None]
    assert np.array_equal(data.decode_image_file(path, 8).numpy(), expected)
    assert np.array_equal(standalone_pixels(path, 8), expected)


def test_an_image_folder_says_what_it_converted(tmp_path):
    photo(tmp_path / "p" / "a" / "ramp.png", Image.fromarray(RAMP16))
    photo(tmp_path / "p" / "a" / "float.tif", Image.fromarray((RAMP16 / 65535).astype(np.float32)))
    for i in range(3):
        photo(tmp_path / "p" / "b" / f"{i}.png", Image.new("RGB", (64, 64), (i, 0, 0)))
    photo(tmp_path / "p" / "a" / "2.png", Image.new("RGB", (64, 64)))
    s = data.load_image_folder(tmp_path / "p", size=64, progress=False)
    assert s.origin.endswith("Converted to RGB: 1 32-bit float grayscale (0..1 scaled to 0..255, copied into all "
                             "three channels), e.g. a/float.tif; 1 16-bit grayscale (0..65535 scaled to 0..255, "
                             "copied into all three channels), e.g. a/ramp.png.")
    everything = np.concatenate([s.train.images.numpy(), s.val.images.numpy(), s.test.images.numpy()])
    assert any(np.array_equal(img, rgb(np.round(RAMP16 / 257).astype(np.uint8))) for img in everything)


# ------------------------------------------------------------------------------------------- huge images
def test_a_decompression_bomb_is_named_with_the_fix_before_any_decoding(tmp_path, monkeypatch):
    root = tmp_path / "p"
    for cls in ("a", "b"):
        for i in range(3):
            photo(root / cls / f"{i}.png", Image.new("RGB", (20, 20)))
    png_header(root / "a" / "bomb.png", 20000, 20000)  # 400 megapixels, over Pillow's hard limit
    png_header(root / "b" / "huge.png", 10000, 10000)  # 100 megapixels, over the limit Pillow only warns about
    no_decoding(monkeypatch)
    with pytest.raises(DataError) as e:
        data.load_image_folder(root, progress=False)
    assert str(e.value) == (
        f"{root}: 2 file(s) are not readable images: a/bomb.png (Image size (400000000 pixels) exceeds limit of "
        "178956970 pixels, a guard against decompression bombs: shrink the photo (e.g. to 4000 pixels on its longer "
        "side) or remove it), b/huge.png (10000x10000 pixels (100 megapixels) is more than the 89 megapixels decoded "
        "here (a guard against decompression bombs): shrink the photo (e.g. to 4000 pixels on its longer side) or "
        "remove it). Remove or replace them (a file that no image viewer opens is damaged, or not an image).")
    monkeypatch.undo()
    with pytest.raises(DataError, match=rf"^{root / 'a' / 'bomb.png'} is not a readable image \(Image size "):
        data.decode_image_file(root / "a" / "bomb.png")


def test_a_huge_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    path = photo(tmp_path / "big.jpg", Image.new("L", (9600, 9600), 77))  # 92 megapixels: over Pillow's limit
    with images.open_photo(path, 64) as img:
        assert img.size == (1200, 1200)  # 1/8 scale: 1.4 MB decoded, not 92 MB
    assert np.array_equal(data.decode_image_file(path, 64).numpy(), np.full((3, 64, 64), 77, dtype=np.uint8))


# ------------------------------------------------------------------------------------------ bad files
def test_an_unreadable_image_is_named_without_pythons_file_object(tmp_path):
    root = tmp_path / "p"
    for cls in ("a", "b"):
        for i in range(3):
            photo(root / cls / f"{i}.png", Image.new("RGB", (20, 20)))
    (root / "b" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as e:
        data.load_image_folder(root, progress=False)
    assert str(e.value) == (f"{root}: 1 file(s) are not readable images: b/1.png (cannot identify image file: not an "
                            "image, or damaged). Remove or replace them (a file that no image viewer opens is damaged, "
                            "or not an image).")


def test_class_folders_spelled_in_either_unicode_normalisation_are_one_class(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    for split, spelling in (("train", nfc), ("val", nfd)):  # val/ as a zip made on macOS spells it
        for cls in (spelling, "tea"):
            for i in range(2):
                photo(tmp_path / "p" / split / cls / f"{i}.png", Image.new("RGB", (8, 8)))
    s = data.load_image_folder(tmp_path / "p", size=8, progress=False)
    assert s.train.classes == [nfc, "tea"] and s.val.class_counts().tolist() == [2, 2]


def test_one_unreadable_photo_does_not_cost_the_others_their_prediction(tmp_path, capsys):
    good = [photo(tmp_path / f"{i}.png", Image.new("RGB", (40, 30), (60 * i, 90, 10))) for i in range(2)]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    model = models.build_resnet18(3)
    out = train.predict(model, [good[0], bad, good[1]], ["a", "b", "c"], device="cpu")
    alone = train.predict(model, good, ["a", "b", "c"], device="cpu")
    assert out[1] == [] and [out[0], out[2]] == alone
    assert capsys.readouterr().out == (f"Not predicted: {bad} is not a readable image (cannot identify image file: "
                                       "not an image, or damaged). Give another photo, or a copy of it saved as .jpg "
                                       "or .png.\n")
    with pytest.raises(DataError, match=f"^{bad} is not a readable image"):
        train.predict(model, [bad], ["a", "b", "c"], device="cpu")
