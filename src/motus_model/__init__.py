"""motus_model: the Motus unified latent-action world model in pure PyTorch (no ROS imports).

Kept light on purpose: importing the package pulls in only the config. ``MotusModel``
(which imports torch) is resolved lazily on first attribute access.
"""

from motus_model.config import MotusConfig

__all__ = ["MotusConfig", "MotusModel"]


def __getattr__(name: str):
    if name == "MotusModel":
        from motus_model.modeling_motus import MotusModel

        return MotusModel
    raise AttributeError(f"module 'motus_model' has no attribute {name!r}")
