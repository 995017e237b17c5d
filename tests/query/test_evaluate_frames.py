import json

import numpy as np
import pytest

from gags.data.labels import load_labels
from gags.errors import GagsError
from gags.query.evaluate import evaluate_frames
from gags.query.metrics import evaluate_query


def _obj(category, x1, y1, x2, y2):
    return {
        "category": category,
        "group": 1,
        "segmentation": [[x1, y1], [x2, y1], [x2, y2], [x1, y2]],
        "area": 0,
        "layer": 1.0,
        "bbox": [x1, y1, x2, y2],
        "iscrowd": 0,
        "note": "",
    }


@pytest.fixture
def labels(tmp_path):
    frames = {
        "frame_00001": [_obj("bowl", 20, 20, 79, 79), _obj("egg", 100, 10, 139, 49), _obj("egg", 100, 70, 139, 109)],
        "frame_00005": [_obj("bowl", 60, 30, 119, 89)],
    }
    for name, objects in frames.items():
        info = {"name": f"{name}.jpg", "width": 160, "height": 120, "depth": 3, "note": ""}
        (tmp_path / f"{name}.json").write_text(json.dumps({"info": info, "objects": objects}))
    return load_labels(tmp_path)


def _block(h, w, rows, cols, hi=0.9, lo=0.2):
    rel = np.full((h, w), lo, np.float32)
    rel[rows, cols] = hi
    return rel


def test_evaluate_frames_half_resolution(labels):
    # Maps at 80x60: labels resized by 1/2. bowl@1 and egg@1 (second egg) are found; bowl@5 is looked for elsewhere.
    relevancy = {
        "frame_00001": {
            "bowl": _block(60, 80, slice(10, 40), slice(10, 40)),
            "egg": _block(60, 80, slice(35, 55), slice(50, 70)),
        },
        "frame_00005": {"bowl": _block(60, 80, slice(0, 12), slice(0, 12))},
    }
    seen = []
    metrics = evaluate_frames(relevancy, labels, on_result=lambda f, c, r: seen.append((f, c, r.hit)))
    assert [(q["frame"], q["label"], q["hit"]) for q in metrics["queries"]] == [
        ("frame_00001", "bowl", True),
        ("frame_00001", "egg", True),  # the peak lies in the second egg's box only
        ("frame_00005", "bowl", False),
    ]
    assert seen == [(q["frame"], q["label"], q["hit"]) for q in metrics["queries"]]
    assert metrics["loc_acc"] == pytest.approx(2 / 3)
    assert metrics["n_frames"] == 2 and metrics["n_queries"] == 3
    # Each IoU is the protocol's on the resized labels; the mean is over (frame, label) pairs.
    for q in metrics["queries"]:
        sized = labels[q["frame"]].resized(80, 60)
        ref = evaluate_query(relevancy[q["frame"]][q["label"]], sized.masks[q["label"]], sized.boxes[q["label"]])
        assert q["iou"] == ref.iou and list(ref.localization.point) == q["point"]
    assert metrics["queries"][0]["iou"] > 0.7 and metrics["queries"][2]["iou"] == 0.0
    assert metrics["miou"] == pytest.approx(np.mean([q["iou"] for q in metrics["queries"]]))
    assert 0.0 <= metrics["miou"] <= 1.0
    json.dumps(metrics)  # JSON-ready


def test_split_selection_and_levels(labels):
    weak = _block(120, 160, slice(0, 10), slice(0, 10), hi=0.6)
    three = np.stack([weak, _block(120, 160, slice(30, 90), slice(60, 120))])
    metrics = evaluate_frames({"frame_00005": {"bowl": three}}, labels)
    assert metrics["n_frames"] == 1 and metrics["loc_acc"] == 1.0
    assert metrics["queries"][0]["level_loc"] == 1 and metrics["queries"][0]["level_seg"] == 1


def test_contract_errors(labels):
    with pytest.raises(ValueError, match="labels without relevancy"):
        evaluate_frames({"frame_00001": {"bowl": np.zeros((10, 10))}}, labels)
    with pytest.raises(ValueError, match="no labels"):
        evaluate_frames({"frame_00009": {}}, labels)
    with pytest.raises(GagsError, match="no labelled"):
        evaluate_frames({}, labels)
    # A label too small for the rendered resolution.
    with pytest.raises(GagsError, match="covers no pixel"):
        evaluate_frames({"frame_00005": {"bowl": np.zeros((2, 2), np.float32)}}, labels)
