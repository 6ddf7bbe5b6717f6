"""The three-stage training recipe behind ``motus train`` (stage presets in config/training/).

Heavy modules (the trainer imports accelerate, transformers and diffusers) load on first use.
"""

from motus_model.training.config import TrainingConfig

__all__ = ["TrainingConfig", "Trainer", "train"]


def __getattr__(name: str):
    if name in ("Trainer", "train"):
        from motus_model.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'motus_model.training' has no attribute {name!r}")
