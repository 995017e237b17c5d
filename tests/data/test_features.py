"""LangSplat-format language features: names, atomic writes, and what a reader accepts or refuses."""

import numpy as np
import pytest

from gags.data.features import (
    check_unique_stems,
    feature_paths,
    feature_stem,
    read_language_features,
    write_language_features,
)
from gags.errors import GagsError


def test_round_trip_and_langsplat_float_maps(tmp_path):
    feats = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float16)
    seg = np.full((4, 6, 7), -1, np.int32)
    seg[1:, 2:4, 3:5] = [[[0]], [[3]], [[4]]]
    write_language_features(tmp_path, "frame_00001.jpg", feats, seg)
    f_path, s_path = feature_paths(tmp_path, "frame_00001.jpg")
    assert f_path.name == "frame_00001_f.npy" and s_path.name == "frame_00001_s.npy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame_00001_f.npy", "frame_00001_s.npy"]
    f, s = read_language_features(tmp_path, "frame_00001.jpg")
    assert np.array_equal(f, feats) and np.array_equal(s, seg) and s.dtype == np.int32
    np.save(s_path, seg.astype(np.float32))  # LangSplat saves its maps as float32
    assert np.array_equal(read_language_features(tmp_path, "frame_00001.jpg")[1], seg)


@pytest.mark.parametrize(("feats", "seg", "message"), [
    (np.zeros((3, 4), np.int32), np.zeros((4, 2, 2), np.int32), "float16"),
    (np.full((3, 4), np.nan, np.float16), np.zeros((4, 2, 2), np.int32), "NaN"),
    (np.zeros((3, 4), np.float16), np.zeros((3, 2, 2), np.int32), r"\[4, H, W\]"),
    (np.zeros((3, 4), np.float16), np.full((4, 2, 2), 0.5, np.float32), "non-integer"),
    (np.zeros((3, 4), np.float16), np.full((4, 2, 2), 3, np.int32), r"indices in \[3, 3\]"),
    (np.zeros((3, 4), np.float16), np.full((4, 2, 2), -2, np.int32), r"indices in \[-2, -2\]"),
])
def test_bad_files_are_gags_errors_that_name_the_file(tmp_path, feats, seg, message):
    write_language_features(tmp_path, "a.png", feats, seg)
    with pytest.raises(GagsError, match=message) as info:
        read_language_features(tmp_path, "a.png")
    assert "a_f.npy" in str(info.value) or "a_s.npy" in str(info.value)


def test_missing_or_unreadable_files_and_colliding_names(tmp_path):
    with pytest.raises(GagsError, match="b_f.npy is missing.*run this"):
        read_language_features(tmp_path, "b.png", missing_hint="run this")
    feature_paths(tmp_path, "c.png")[0].write_bytes(b"not numpy")
    feature_paths(tmp_path, "c.png")[1].write_bytes(b"not numpy")
    with pytest.raises(GagsError, match="cannot read"):
        read_language_features(tmp_path, "c.png")
    with pytest.raises(GagsError, match="share the feature file name"):
        check_unique_stems(["x.1.png", "x.2.png"], tmp_path)


def test_feature_stem_is_langsplats():
    assert feature_stem("frame_00002.jpg") == "frame_00002"
    assert feature_stem("sub/DSC.0001.JPG") == "DSC"
