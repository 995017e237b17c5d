import pytest

from gags.errors import GagsError
from gags.models import load_encoder, load_segmenter, parse_encoder_spec, parse_segmenter_spec
from gags.models.specs import SAM2_CONFIGS


def test_hierarchy_is_default_and_needs_no_file():
    spec = parse_segmenter_spec("hierarchy")
    assert spec.kind == "hierarchy" and spec.checkpoint is None


def test_sam_spec_parses_arch_and_path(tmp_path):
    ckpt = tmp_path / "sam_vit_h_4b8939.pth"
    ckpt.write_bytes(b"")
    spec = parse_segmenter_spec(f"sam:vit_h:{ckpt}")
    assert (spec.kind, spec.arch, spec.checkpoint) == ("sam", "vit_h", ckpt)


def test_sam2_spec_maps_checkpoint_names_to_shipped_configs(tmp_path):
    ckpt = tmp_path / "sam2.1_hiera_large.pt"
    ckpt.write_bytes(b"")
    spec = parse_segmenter_spec(f"sam2:sam2.1_hiera_large:{ckpt}")
    assert spec.arch == "sam2.1_hiera_large"
    assert SAM2_CONFIGS[spec.arch] == "configs/sam2.1/sam2.1_hiera_l.yaml"


@pytest.mark.parametrize(
    "load, spec, words",
    [
        (load_segmenter, "sam", ["Accepted forms", "hierarchy", "sam2:"]),
        (load_segmenter, "sam:vit_h", ["Accepted forms"]),
        (load_segmenter, "felzenszwalb", ["unknown segmenter spec", "hierarchy"]),
        (load_segmenter, "sam:vit_x:/tmp/x.pth", ["vit_x", "vit_b, vit_l, vit_h"]),
        (load_segmenter, "sam2:sam2.1_hiera_huge:/tmp/x.pt", ["sam2.1_hiera_huge", "sam2.1_hiera_large"]),
        (load_segmenter, "sam:vit_h:/no/such/sam.pth",
         ["/no/such/sam.pth", "does not exist", "--segmenter tinysam or hierarchy"]),
        (load_encoder, "clip", ["unknown encoder spec", "tiny", "openclip:local-dir:"]),
        (load_encoder, "openclip:ViT-B-16", ["Accepted forms"]),
        (load_encoder, "openclip:ViT-B-16:/no/such/model.bin",
         ["/no/such/model.bin", "does not exist", "--encoder tiny"]),
        (load_encoder, "openclip:local-dir:/no/such/dir", ["/no/such/dir", "does not exist", "open_clip_config.json"]),
    ],
    ids=lambda value: value.__name__ if callable(value) else None,
)
def test_bad_specs_say_what_is_accepted(load, spec, words):
    with pytest.raises(GagsError) as exc:
        load(spec)
    for word in words:
        assert word in str(exc.value)


def test_local_dir_without_config_or_weights_is_refused(tmp_path):
    with pytest.raises(GagsError, match="open_clip_config.json"):
        parse_encoder_spec(f"openclip:local-dir:{tmp_path}")
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(GagsError, match="no weights file"):
        parse_encoder_spec(f"openclip:local-dir:{tmp_path}")


def test_architecture_name_given_a_folder_suggests_local_dir(tmp_path):
    with pytest.raises(GagsError, match="openclip:local-dir:"):
        parse_encoder_spec(f"openclip:ViT-B-16:{tmp_path}")


def test_unknown_open_clip_architecture_lists_the_known_ones(tmp_path):
    ckpt = tmp_path / "model.bin"
    ckpt.write_bytes(b"")
    with pytest.raises(GagsError) as exc:
        load_encoder(f"openclip:ViT-Q-99:{ckpt}")
    assert "ViT-Q-99" in str(exc.value) and "ViT-B-16" in str(exc.value)
