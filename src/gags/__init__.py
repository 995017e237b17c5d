"""gags: open-vocabulary 3D scene understanding with Gaussian splatting (GAGS and its baselines)."""

from gags.errors import GagsError

__version__ = "0.1.0"

__all__ = ["GagsError", "__version__"]
