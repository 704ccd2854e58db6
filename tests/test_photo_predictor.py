import datetime
from pathlib import Path

from PIL import Image

from course_lib import data, widgets


def test_upload_and_path_reach_the_predict_function_and_errors_are_shown(tmp_path):
    seen = []

    def predict(path):
        seen.append(path)
        data.decode_image_file(path)
        return [("dog", 0.75), ("cat", 0.2), ("ship", 0.05)]

    photo = tmp_path / "my dog.png"
    Image.new("RGB", (40, 30), "red").save(photo)
    w = widgets.PhotoPredictor(predict)
    w.path.value = str(photo)
    w.button.click()
    assert seen == [str(photo)] and w.result[0] == ("dog", 0.75)
    assert "my dog.png" in w.answer.value and "75.0%" in w.answer.value
    w.upload.value = ({"name": "../../escape.png", "type": "image/png", "size": 1, "last_modified": datetime.datetime.now(datetime.timezone.utc),
                       "content": memoryview(photo.read_bytes())},)
    assert seen[-1].endswith("/escape.png") and "uploaded-photos-" in seen[-1]  # kept inside its own folder
    w.path.value = str(tmp_path / "missing.jpg")
    w.button.click()
    assert w.result == f"{tmp_path / 'missing.jpg'} is not a file. Give the path of a photo (.jpg, .png, ...)."
    uploads = Path(seen[-2]).parent
    assert uploads.is_dir()
    w.close()
    assert not uploads.exists()  # the uploaded copies do not outlive the widget
