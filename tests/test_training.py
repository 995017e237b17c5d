"""The training harness both trainers use: checkpoint round trip (tensors, optimizer state, RNG), refusals, the
settings check, the view schedule and the training curve."""

import json

import pytest
import torch

from gags import training
from gags.errors import GagsError
from gags.training import (
    Checkpoint,
    Clock,
    Curve,
    check_settings,
    grouped,
    load_checkpoint,
    load_optimizers,
    optimizer_tensors,
    save_checkpoint,
    view_index,
)


def _stepped_adam(seed: int) -> tuple[dict[str, torch.nn.Parameter], dict[str, torch.optim.Adam]]:
    torch.manual_seed(seed)
    params = {"a": torch.nn.Parameter(torch.randn(5, 3)), "b": torch.nn.Parameter(torch.randn(4))}
    optims = {"a": torch.optim.Adam([params["a"]], lr=0.1), "b": torch.optim.Adam([params["b"]], lr=0.01)}
    for _ in range(3):
        loss = sum(p.square().sum() for p in params.values())
        loss.backward()
        for opt in optims.values():
            opt.step()
            opt.zero_grad()
    return params, optims


def test_checkpoint_round_trip_continues_the_optimizers_exactly(tmp_path):
    params, optims = _stepped_adam(0)
    optim, groups = optimizer_tensors(optims)
    rng = torch.get_rng_state()
    save_checkpoint(tmp_path / "c.safetensors", "test", Checkpoint(
        step=7, tensors={**grouped("params", params), **optim}, info={"groups": groups, "x": [1, 2]}, rng_state=rng))
    back = load_checkpoint(tmp_path / "c.safetensors", "test")
    assert back.step == 7 and back.info["x"] == [1, 2] and torch.equal(back.rng_state, rng)
    fresh = {k: torch.nn.Parameter(v.clone()) for k, v in back.group("params").items()}
    fresh_optims = {"a": torch.optim.Adam([fresh["a"]], lr=0.1), "b": torch.optim.Adam([fresh["b"]], lr=0.01)}
    load_optimizers(fresh_optims, back, back.info["groups"])
    for tree, opts in ((params, optims), (fresh, fresh_optims)):  # one more step each: the same numbers
        loss = sum(p.square().sum() for p in tree.values())
        loss.backward()
        for opt in opts.values():
            opt.step()
    for key in params:
        assert torch.equal(params[key], fresh[key]), key
    assert not list(tmp_path.glob(".*tmp*"))


def test_checkpoints_of_another_kind_or_damaged_are_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, "reconstruct", Checkpoint(step=1, tensors={"x.y": torch.zeros(2)}))
    with pytest.raises(GagsError, match="not a gags distill checkpoint.*Delete it"):
        load_checkpoint(path, "distill")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(GagsError, match="cannot be read.*Delete it"):
        load_checkpoint(path, "reconstruct")


def test_optimizer_state_of_other_shapes_does_not_fit(tmp_path):
    params, optims = _stepped_adam(0)
    optim, groups = optimizer_tensors(optims)
    ckpt = Checkpoint(step=3, tensors=optim)
    other = torch.nn.Parameter(torch.zeros(6, 3))
    with pytest.raises(ValueError, match="shape"):
        load_optimizers({"a": torch.optim.Adam([other])}, ckpt, groups)


def test_settings_check_names_what_changed(tmp_path):
    check_settings(tmp_path / "c", {"seed": 1, "lr": 0.1}, {"seed": 1, "lr": 0.1})
    with pytest.raises(GagsError, match=r"other settings \(\{'seed': \(1, 2\)\}"):
        check_settings(tmp_path / "c", {"seed": 1, "lr": 0.1}, {"seed": 2, "lr": 0.1})


def test_view_order_is_a_seeded_permutation_per_epoch():
    n = 7
    epoch0 = [view_index(5, s, n) for s in range(n)]
    epoch1 = [view_index(5, s, n) for s in range(n, 2 * n)]
    assert sorted(epoch0) == list(range(n)) and sorted(epoch1) == list(range(n))
    assert epoch0 == [view_index(5, s, n) for s in range(n)]
    assert epoch0 != [view_index(6, s, n) for s in range(n)]


def test_curve_averages_stretches_and_survives_a_checkpoint(monkeypatch):
    monkeypatch.setattr(training, "CURVE_POINTS", 4)
    whole = Curve(20)
    first = Curve(20)
    for it in range(1, 21):
        values = {"loss": float(it), "g": [it, 2.0 * it]}
        for curve in (whole, first):
            curve.add(values)
            if curve.due(it):
                curve.close(it, seconds=0.0)
        if it == 12:  # a checkpoint in the middle of a stretch: the rest continues from its state
            first = Curve(20, json.loads(json.dumps(first.state())))
    assert [p["iteration"] for p in whole.points] == [5, 10, 15, 20]
    assert whole.points[0]["loss"] == 3.0 and whole.points[0]["g"] == [3.0, 6.0]
    assert first.points == whole.points


def test_clock_leaves_pauses_out():
    clock = Clock(10.0, 1.0)
    with clock.pause():
        sum(range(200_000))
    assert 10.0 <= clock.seconds < 10.05 and clock.cpu_seconds < 1.05
