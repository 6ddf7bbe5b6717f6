"""Fixtures for the training tests (helpers live in training_helpers.py)."""

from __future__ import annotations

import pytest
from training_helpers import write_tiny_dataset


@pytest.fixture
def tiny_dataset(tmp_path):
    """A 2-episode, 3-camera tiny dataset: (root, episodes as written)."""
    return write_tiny_dataset(tmp_path / "ds")
