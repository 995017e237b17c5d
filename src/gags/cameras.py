"""Pinhole cameras in the OpenCV convention (+x right, +y down, +z forward), world-to-camera.

Converters from other conventions live at the edges (``gags.data``); everything inside the package uses this one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from gags.errors import GagsError

# An OpenGL camera (nerfstudio, Blender, instant-ngp) looks down -z with +y up; OpenCV looks down +z with +y down.
OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


@dataclass(frozen=True)
class Camera:
    """One posed pinhole camera.

    Attributes:
        name: image name, unique within a scene (file name without folder, e.g. ``frame_00002.jpg``).
        K: [3, 3] intrinsics in pixels, pixel centres at +0.5 (gsplat's convention).
        world_to_cam: [4, 4] rigid transform, OpenCV axes.
        width, height: image size in pixels.
    """

    name: str
    K: torch.Tensor
    world_to_cam: torch.Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        K = torch.as_tensor(self.K, dtype=torch.float32)
        w2c = torch.as_tensor(self.world_to_cam, dtype=torch.float32)
        if K.shape != (3, 3) or w2c.shape != (4, 4):
            raise GagsError(f"camera {self.name!r}: K must be 3x3 and world_to_cam 4x4, got {tuple(K.shape)} and "
                            f"{tuple(w2c.shape)}.")
        if not (torch.isfinite(K).all() and torch.isfinite(w2c).all()):
            raise GagsError(f"camera {self.name!r} has a NaN or infinite pose or intrinsics. Fix or remove this "
                            "image from the scene's camera model.")
        if self.width <= 0 or self.height <= 0:
            raise GagsError(f"camera {self.name!r} has size {self.width}x{self.height}; it must be positive.")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "world_to_cam", w2c)

    @property
    def cam_to_world(self) -> torch.Tensor:
        """[4, 4] inverse of ``world_to_cam``."""
        R = self.world_to_cam[:3, :3]
        t = self.world_to_cam[:3, 3]
        out = torch.eye(4)
        out[:3, :3] = R.T
        out[:3, 3] = -R.T @ t
        return out

    @property
    def center(self) -> torch.Tensor:
        """[3] camera centre in world coordinates."""
        return self.cam_to_world[:3, 3]

    def scaled(self, factor: float) -> Camera:
        """The same camera for an image resized by ``factor`` (0.5 = half size); sizes are rounded."""
        width = max(1, round(self.width * factor))
        height = max(1, round(self.height * factor))
        K = self.K.clone()
        K[0] *= width / self.width
        K[1] *= height / self.height
        return replace(self, K=K, width=width, height=height)

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project world points.

        Args:
            points: [N, 3] world coordinates.
        Returns:
            uv: [N, 2] pixel coordinates (continuous; the pixel (i, j) covers [j, j+1) x [i, i+1)).
            z: [N] depth along the optical axis (negative behind the camera).
        """
        R = self.world_to_cam[:3, :3].to(points)
        t = self.world_to_cam[:3, 3].to(points)
        cam = points @ R.T + t
        z = cam[:, 2]
        K = self.K.to(points)
        safe_z = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
        u = K[0, 0] * cam[:, 0] / safe_z + K[0, 1] * cam[:, 1] / safe_z + K[0, 2]
        v = K[1, 1] * cam[:, 1] / safe_z + K[1, 2]
        return torch.stack([u, v], dim=-1), z


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """[4, 4] OpenCV world-to-camera matrix of a camera at ``eye`` [3] looking at ``target`` [3].

    ``up`` [3] is the world's up direction (default +z); the image's +y points away from it.
    """
    eye = torch.as_tensor(eye, dtype=torch.float64)
    target = torch.as_tensor(target, dtype=torch.float64)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) if up is None else torch.as_tensor(up, dtype=torch.float64)
    forward = target - eye
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    if right.norm() < 1e-9:  # looking straight along up: any right vector will do
        right = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward])  # rows: camera axes in world coordinates
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ eye
    return w2c.float()


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    """[3, 3] pinhole intrinsics."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)
