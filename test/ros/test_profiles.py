"""motus_ros.profiles: profile names resolve in the source checkout and in the installed share/motus_ros (ament index);
the schema itself is tested in test/model/test_embodiment.py."""

from pathlib import Path

import pytest

from motus_model.embodiment import RobotProfile
from motus_ros.profiles import available_profiles, load_profile, profile_search_dirs

pytestmark = pytest.mark.timeout(60)


def test_names_resolve_in_the_installed_share_folder_too():
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory("motus_ros")).resolve() / "config" / "robots"
    assert share in profile_search_dirs()
    assert {"aloha_sim", "interbotix_aloha", "agilex_aloha2", "ac_one"} <= set(available_profiles())
    assert isinstance(load_profile("aloha_sim"), RobotProfile)
    assert len(set(profile_search_dirs())) == len(profile_search_dirs())  # each folder once


def test_unknown_name_lists_every_folder_searched():
    with pytest.raises(ValueError, match="did you mean 'aloha_sim'") as error:
        load_profile("aloha_sin")
    for directory in profile_search_dirs():
        assert str(directory) in str(error.value)
