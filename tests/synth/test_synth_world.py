"""The object library and the presets: vocabulary, hierarchy, variety drawn from the seed, determinism."""

import collections

import numpy as np
import pytest
import torch

from gags.errors import GagsError
from gags.synth.library import KINDS, PRESETS
from gags.synth.rig import plan_cameras, ring_distances, sample_cameras, split_views
from gags.synth.world import COLORS, TEXTURES, World, build_world


def test_vocabulary_has_every_level_and_no_name_on_two_levels():
    vocab = World.vocabulary()
    assert set(vocab) == {"whole", "part", "subpart", "color", "texture"}
    assert len(KINDS) >= 15
    assert set(KINDS) <= set(vocab["whole"])
    counts = collections.Counter(n for level in ("whole", "part", "subpart") for n in vocab[level])
    assert [n for n, c in counts.items() if c > 1] == []
    for name in ("ramen bowl", "noodles", "egg", "egg yolk", "mug handle", "lid knob", "table leg", "wheel"):
        assert any(name in vocab[level] for level in ("whole", "part", "subpart")), name
    assert vocab["color"] == list(COLORS) and vocab["texture"] == list(TEXTURES)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_build_a_nested_hierarchy(preset):
    world = build_world(preset, 3)
    vocab = World.vocabulary()
    assert len(world.wholes) - len(world.background) >= 6
    for level, nodes in (("subpart", world.subparts), ("part", world.parts), ("whole", world.wholes)):
        assert [n.id for n in nodes] == list(range(len(nodes)))
        for n in nodes:
            assert n.level == level
            assert n.implicit or n.name in vocab[level]
    for p in world.parts:
        assert world.wholes[p.parent].children.count(p.id) == 1
        assert all(world.subparts[s].parent == p.id for s in p.children)
    assert len(world.prim_subpart) == len(world.prims)
    assert (world.prim_part == np.array([world.subparts[s].parent for s in world.prim_subpart])).all()


def test_describe_gives_names_colours_textures_and_parents():
    world = build_world("ramen", 0)
    sub = next(s for s in world.subparts if s.name == "egg yolk")
    d = world.describe(0, sub.id)
    assert d.name == "egg yolk" and d.level == "subpart"
    assert d.parents == ("egg", "ramen bowl")
    assert d.color in COLORS and d.texture in TEXTURES
    assert d.text().endswith("egg yolk")
    whole = world.describe("whole", world.nodes(2)[0].id)
    assert whole.parents == ()
    with pytest.raises(GagsError):
        world.describe(1, len(world.parts))
    with pytest.raises(GagsError):
        build_world("moon", 0)


def test_variety_colour_does_not_name_the_kind():
    kinds_of_color = collections.defaultdict(set)
    colors_of_kind = collections.defaultdict(set)
    for seed in range(6):
        for preset in ("ramen", "teatime", "figurines", "kitchen", "random"):
            world = build_world(preset, seed)
            for w in world.wholes:
                if w.id not in world.background:
                    kinds_of_color[w.material.color].add(w.kind)
                    colors_of_kind[w.kind].add(w.material.color)
    assert max(len(k) for k in kinds_of_color.values()) >= 4  # one colour on several kinds
    assert sum(len(c) >= 3 for c in colors_of_kind.values()) >= 8  # many kinds in several colours


def test_sizes_span_more_than_ten_times():
    world = build_world("teatime", 0)
    radius = {}
    for prim, s in zip(world.prims, world.prim_subpart, strict=True):
        radius[s] = max(radius.get(s, 0.0), prim.bound_radius())
    knob = min(radius[s.id] for s in world.subparts if s.name == "lid knob")
    table = max(radius[s.id] for s in world.subparts if s.name == "table top")
    assert table / knob > 10


def test_worlds_are_deterministic_by_seed():
    a, b, c = build_world("kitchen", 5), build_world("kitchen", 5), build_world("kitchen", 6)
    assert a.to_json() == b.to_json()
    assert a.to_json() != c.to_json()
    cams_a = sample_cameras(a, 5, 64, 5)
    cams_b = sample_cameras(b, 5, 64, 5)
    assert all((x.world_to_cam == y.world_to_cam).all() for x, y in zip(cams_a, cams_b, strict=True))


def test_cameras_cover_near_and_far_and_stay_clear_of_objects():
    world = build_world("figurines", 1)
    cams, plans = plan_cameras(world, 40, 64, 1)
    far, _, near = ring_distances(world)
    assert far / near >= 3
    objects = [w.id for w in world.wholes if w.id not in world.background]
    centers, radii = world.bound_centers[objects], world.bound_radii[objects]
    for cam, plan in zip(cams, plans, strict=True):
        eye = cam.center.double().numpy()
        assert eye[2] > 0 and (np.linalg.norm(centers - eye, axis=1) > radii).all()
        assert np.linalg.norm(eye - np.array(plan.target)) == pytest.approx(plan.distance, rel=1e-4)
    distances = [p.distance for p in plans]
    assert max(distances) / min(distances) >= 3  # from far away and from close by
    assert {p.ring for p in plans} == {0, 1, 2}
    total, test = split_views(40)
    assert total == 45 and len(test) == 5 and len(set(test)) == 5


def test_focus_whole_frames_one_object():
    world = build_world("ramen", 0)
    target = 0
    cams = sample_cameras(world, 6, 64, 0, focus_whole=target)
    for cam in cams:
        uv, z = cam.project(torch.tensor(world.bound_centers[[target]], dtype=torch.float32))
        assert z[0] > 0 and 0 <= uv[0, 0] < 64 and 0 <= uv[0, 1] < 64
