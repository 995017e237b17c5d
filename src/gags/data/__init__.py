"""Scene inputs and file formats: COLMAP, nerfstudio / instant-ngp / Blender transforms, 3DGS PLY, images, the scene
record of an output folder."""

from gags.data.ply import read_ply, read_point_ply, write_ply, write_point_ply
from gags.data.scene import (
    Scene,
    load_scene,
    load_scene_json,
    save_scene_json,
    split_ids,
)

__all__ = [
    "Scene",
    "load_scene",
    "load_scene_json",
    "read_ply",
    "read_point_ply",
    "save_scene_json",
    "split_ids",
    "write_ply",
    "write_point_ply",
]
