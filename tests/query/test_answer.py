"""``gags query`` on the hand-made OUT of ``tests/handmade_scene.py``: files, the point on the object, the mask, 3D
PLYs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gags.config import QueryConfig
from gags.errors import GagsError
from gags.workspace import Workspace
from tests import handmade_scene as helpers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base_out(tmp_path_factory, encoder_dir) -> Path:
    return helpers.make_out_with_fields(tmp_path_factory.mktemp("queryscene"), encoder_dir)


@pytest.fixture
def out(base_out, tmp_path) -> Path:
    dst = tmp_path / "out"
    shutil.copytree(base_out, dst)
    return dst


def config(out: Path, encoder_dir: Path, text: str = "egg", **kwargs) -> QueryConfig:
    return QueryConfig(out=out, text=text, encoder=f"openclip:local-dir:{encoder_dir}", **kwargs)


def _inside(point, box_category: str, camera) -> bool:
    label = helpers.label_json(camera, camera.name, categories=(box_category,))
    x1, y1, x2, y2 = label["objects"][0]["bbox"]
    return x1 <= point[0] <= x2 and y1 <= point[1] <= y2


@pytest.mark.parametrize("method", ["gags", "langsplat"])
def test_query_held_out_view(out, encoder_dir, method, capsys):
    from gags.query.answer import run

    record = run(config(out, encoder_dir, method=method, ply=True))
    folder = Workspace(out).query_dir("egg")
    assert json.loads((folder / "result.json").read_text())["text"] == "egg"
    assert [v["view"] for v in record["views"]] == ["frame_00004.png"]  # the held-out view
    view = record["views"][0]
    assert view["split"] == "test"
    assert view["level"] == (1 if method == "langsplat" else 0)
    cam = helpers.cameras()[3]
    assert _inside(view["point"], "egg", cam) and not _inside(view["point"], "bowl", cam)
    for key in ("relevancy_png", "relevancy_npy", "mask_png", "overlay_png"):
        assert (folder / view[key]).is_file()
    rel = np.load(folder / view["relevancy_npy"])
    assert rel.shape == (helpers.HEIGHT, helpers.WIDTH) and rel.dtype == np.float32
    # The mask covers the egg's label polygon and not the bowl's.
    from gags.data.labels import read_frame_labels

    labels = read_frame_labels(Path(json.loads((out / "scene.json").read_text())["root"]) / "label" /
                               "frame_00004.json")
    import cv2

    mask = cv2.imread(str(folder / view["mask_png"]), cv2.IMREAD_GRAYSCALE) > 0
    egg, bowl = labels.masks["egg"], labels.masks["bowl"]
    assert (mask & egg).sum() / (mask | egg).sum() > 0.7
    assert not (mask & bowl).any()
    # 3D: exactly the egg's Gaussians are selected.
    _, owner = helpers.scene_gaussians()
    sel = record["3d"]
    assert sel["selected"] == int((owner == 1).sum()) and sel["num_gaussians"] == len(owner)
    from gags.data import read_ply

    selected = read_ply(folder / sel["selected_ply"])
    splats, _ = helpers.scene_gaussians()
    torch.testing.assert_close(selected["means"], splats["means"][owner == 1])
    assert len(read_ply(folder / sel["relevancy_ply"])["means"]) == len(owner)
    assert "Gaussians with relevancy > 0.5" in capsys.readouterr().out


def test_query_views_by_name_and_all(out, encoder_dir):
    from gags.query.answer import run

    record = run(config(out, encoder_dir, text="Bowl!", views=("frame_00001.png", "frame_00002"), downscale=2))
    assert [v["view"] for v in record["views"]] == ["frame_00001.png", "frame_00002.png"]
    assert all(v["resolution"] == [helpers.WIDTH // 2, helpers.HEIGHT // 2] for v in record["views"])
    assert (Workspace(out).query_dir("Bowl!") / "frame_00002_mask.png").is_file()
    assert "3d" not in record
    record = run(config(out, encoder_dir, text="bowl", all=True))
    assert len(record["views"]) == 4


def test_query_user_errors(out, encoder_dir, tmp_path):
    from gags.query.answer import run

    with pytest.raises(GagsError, match=r"no view named frame_00099"):
        run(config(out, encoder_dir, views=("frame_00099.png",)))
    with pytest.raises(GagsError, match=r"field/avg/field.safetensors does not exist.*gags, langsplat"):
        run(config(out, encoder_dir, method="avg"))
    with pytest.raises(GagsError, match="unknown method 'clip'"):
        run(config(out, encoder_dir, method="clip"))
    with pytest.raises(GagsError, match="either --views NAMES or --all"):
        run(config(out, encoder_dir, views=("frame_00001.png",), all=True))
    with pytest.raises(GagsError, match="empty"):
        run(config(out, encoder_dir, text="  "))
    with pytest.raises(GagsError, match="scene.json"):
        run(config(tmp_path / "nothing", encoder_dir))
    shutil.rmtree(out / "field")
    with pytest.raises(GagsError, match="gags distill"):
        run(config(out, encoder_dir))


def test_query_cli(out, encoder_dir, capsys):
    from gags.cli import main

    code = main(["query", str(out), "egg", "--ply", "--encoder", f"openclip:local-dir:{encoder_dir}"])
    assert code == 0
    assert (Workspace(out).query_dir("egg") / "selected.ply").is_file()
    assert "3D:" in capsys.readouterr().out
