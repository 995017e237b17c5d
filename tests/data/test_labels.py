import json
from pathlib import Path

import numpy as np
import pytest

from gags.data.labels import FrameLabels, frame_number, load_labels, match_images, read_frame_labels
from gags.errors import GagsError


def _frame(name: str, objects: list[dict], width: int = 64, height: int = 48) -> dict:
    """A label file in the public LERF-OVS layout (all fields the release writes)."""
    return {
        "info": {"name": name, "width": width, "height": height, "depth": 3, "note": ""},
        "objects": [
            {
                "category": o["category"],
                "group": i + 1,
                "segmentation": o["segmentation"],
                "area": 0,
                "layer": float(i + 1),
                "bbox": o["bbox"],
                "iscrowd": 0,
                "note": "",
            }
            for i, o in enumerate(objects)
        ],
    }


COOKIE_A = {  # a rectangle with float vertices: int32 truncation gives columns 10..20, rows 5..15 (fillPoly inclusive)
    "category": "cookie",
    "segmentation": [[10.7, 5.2], [20.9, 5.2], [20.9, 15.8], [10.7, 15.8]],
    "bbox": [10.7, 5.2, 20.9, 15.8],
}
COOKIE_B = {  # overlaps cookie A on columns 18..20, rows 12..15
    "category": "cookie",
    "segmentation": [[18.0, 12.0], [30.0, 12.0], [30.0, 20.0], [18.0, 20.0]],
    "bbox": [18.0, 12.0, 30.0, 20.0],
}
SHEEP = {
    "category": "sheep",
    "segmentation": [[40.0, 30.0], [60.0, 30.0], [50.0, 45.0]],
    "bbox": [40.0, 30.0, 60.0, 45.0],
}


def _write(folder: Path, stem: str, data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _rect(h: int, w: int, rows: slice, cols: slice) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[rows, cols] = True
    return m


def test_reads_lerf_ovs_frame_and_unites_categories(tmp_path):
    path = _write(tmp_path, "frame_00002", _frame("frame_00002.jpg", [COOKIE_A, SHEEP, COOKIE_B]))
    labels = read_frame_labels(path)
    assert labels.name == "frame_00002" and labels.image_name == "frame_00002.jpg"
    assert (labels.width, labels.height) == (64, 48)
    assert labels.categories == ["cookie", "sheep"]  # order of first appearance
    expected_cookie = _rect(48, 64, slice(5, 16), slice(10, 21)) | _rect(48, 64, slice(12, 21), slice(18, 31))
    np.testing.assert_array_equal(labels.masks["cookie"], expected_cookie)
    assert labels.masks["cookie"].sum() == 121 + 13 * 9 - 4 * 3
    np.testing.assert_array_equal(labels.boxes["cookie"], [COOKIE_A["bbox"], COOKIE_B["bbox"]])
    assert labels.boxes["sheep"].shape == (1, 4)
    sheep = labels.masks["sheep"]
    assert sheep.dtype == bool and sheep[35, 50] and not sheep[44, 41] and not sheep[29, 50]
    assert sheep[30, 40:61].all()  # the top edge of the triangle is filled


def test_resized_masks_nearest_and_boxes_scaled(tmp_path):
    labels = read_frame_labels(_write(tmp_path, "frame_00002", _frame("frame_00002.jpg", [COOKIE_A])))
    half = labels.resized(32, 24)
    assert (half.width, half.height) == (32, 24) and half.masks["cookie"].shape == (24, 32)
    # Destination pixel i samples source pixel 2i + 1: rows 2i+1 in 5..15 -> i in 2..7; columns in 10..20 -> i in 5..9.
    np.testing.assert_array_equal(half.masks["cookie"], _rect(24, 32, slice(2, 8), slice(5, 10)))
    np.testing.assert_allclose(half.boxes["cookie"], [[5.35, 2.6, 10.45, 7.9]])
    assert labels.resized(64, 48) is labels
    up = labels.resized(128, 96)
    assert up.masks["cookie"].sum() == 4 * labels.masks["cookie"].sum()
    np.testing.assert_allclose(up.boxes["cookie"], [np.array(COOKIE_A["bbox"]) * 2])
    assert isinstance(up, FrameLabels) and up.image_name == "frame_00002.jpg"


def test_load_labels_folder(tmp_path):
    _write(tmp_path, "frame_00041", _frame("frame_00041.jpg", [SHEEP]))
    _write(tmp_path, "frame_00002", _frame("frame_00002.jpg", [COOKIE_A, COOKIE_B]))
    _write(tmp_path, "meta", {"not": "a label"})  # ignored: not frame_*.json
    labels = load_labels(tmp_path)
    assert list(labels) == ["frame_00002", "frame_00041"]
    assert labels["frame_00041"].categories == ["sheep"]


def test_load_labels_folder_errors(tmp_path):
    with pytest.raises(GagsError, match="does not exist"):
        load_labels(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GagsError, match="frame_"):
        load_labels(tmp_path / "empty")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "top level"),
        ({"objects": []}, "info"),
        (_frame("frame_00003.jpg", [], width=-5), "info.width"),
        ({"info": {"name": "f.jpg", "width": 64, "height": 48.5}, "objects": []}, "info.height"),
        ({"info": {"name": "f.jpg", "width": 64, "height": 48}}, "objects"),
        (_frame("frame_00003.jpg", [COOKIE_A, {**SHEEP, "segmentation": [1, 2, 3]}]), r"objects\[1\].segmentation"),
        (_frame("frame_00003.jpg", [{**SHEEP, "segmentation": [[1, 2], [3]]}]), r"objects\[0\].segmentation"),
        (_frame("frame_00003.jpg", [{**SHEEP, "segmentation": []}]), r"objects\[0\].segmentation"),
        (_frame("frame_00003.jpg", [{**SHEEP, "bbox": [1, 2, 3]}]), r"objects\[0\].bbox"),
        (_frame("frame_00003.jpg", [{**SHEEP, "bbox": ["a", 2, 3, 4]}]), r"objects\[0\].bbox"),
        (_frame("frame_00003.jpg", [{**SHEEP, "category": ""}]), r"objects\[0\].category"),
        (_frame("frame_00003.jpg", [{**SHEEP, "category": 7}]), r"objects\[0\].category"),
    ],
)
def test_malformed_files_name_file_and_field(tmp_path, data, field):
    path = _write(tmp_path, "frame_00003", data)
    with pytest.raises(GagsError, match=field) as exc:
        read_frame_labels(path)
    assert str(path) in str(exc.value)


def test_missing_bbox_and_segmentation(tmp_path):
    no_box = {k: v for k, v in SHEEP.items() if k != "bbox"}
    path = _write(tmp_path, "frame_00004", {"info": {"name": "x.jpg", "width": 8, "height": 8}, "objects": [no_box]})
    with pytest.raises(GagsError, match=r"objects\[0\].bbox is missing"):
        read_frame_labels(path)


def test_frame_number():
    assert frame_number("frame_00041.jpg") == 41
    assert frame_number("frame_00041") == 41
    assert frame_number("IMG_3.png") == 3
    assert frame_number("kitchen.png") is None


def test_match_images(tmp_path):
    _write(tmp_path, "frame_00041", _frame("frame_00041.jpg", [SHEEP]))
    _write(tmp_path, "frame_00002", _frame("frame_00002.jpg", [COOKIE_A]))
    labels = load_labels(tmp_path)
    # Real LERF-OVS (jpg) and the procedural world (png): same stem.
    assert match_images(labels, ["frame_00001.jpg", "frame_00002.jpg", "frame_00041.jpg"]) == {
        "frame_00002": "frame_00002.jpg",
        "frame_00041": "frame_00041.jpg",
    }
    assert match_images(labels, ["frame_00002.png", "frame_00041.png"])["frame_00041"] == "frame_00041.png"
    # Failing a stem match, the frame number.
    by_number = match_images(labels, ["frame_2.png", "frame_41.png"])
    assert by_number == {"frame_00002": "frame_2.png", "frame_00041": "frame_41.png"}
    with pytest.raises(GagsError, match="frame_00041"):
        match_images(labels, ["frame_00002.jpg", "frame_00040.jpg"])
    with pytest.raises(GagsError, match="several images"):
        match_images(labels, ["frame_00002.jpg", "a_41.png", "b_41.png"])
