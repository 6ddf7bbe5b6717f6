"""Finding robot profiles in a ROS install: the schema is motus_model.embodiment's, the folders are ours.

`load_profile("aloha_sim")` looks in motus_model.embodiment's default folders (the source checkout's
config/robots, the installed copy beside the package), then in share/motus_ros/config/robots of the package
the ament index finds, so a name works from a checkout and from any colcon install alike. Code that only needs
the schema imports `RobotProfile` from motus_model.embodiment.
"""

from __future__ import annotations

import os
from pathlib import Path

from motus_model.embodiment import RobotProfile, default_profile_dirs
from motus_model.embodiment import available_profiles as _available_profiles
from motus_model.embodiment import load_profile as _load_profile

PACKAGE = "motus_ros"


def profile_search_dirs() -> list[Path]:
    """Where profile names resolve: a source checkout's config/robots, then share/motus_ros/config/robots."""
    dirs = default_profile_dirs()
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:  # no ament index (plain pip install): the source tree only
        return dirs
    try:
        share = Path(get_package_share_directory(PACKAGE)).resolve() / "config" / "robots"
    except PackageNotFoundError:
        return dirs
    return dirs if share in dirs else [*dirs, share]


def available_profiles() -> list[str]:
    """Every profile name that load_profile resolves."""
    return _available_profiles(profile_search_dirs())


def load_profile(name_or_path: str | os.PathLike | RobotProfile) -> RobotProfile:
    """A profile by name (profile_search_dirs(), first match wins) or by a path to a YAML file."""
    return _load_profile(name_or_path, profile_search_dirs())
