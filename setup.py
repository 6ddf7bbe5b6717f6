"""ament_python package motus_ros: installs the motus_ros, motus_model and motus_sim Python packages from src/,
and launch/,
config/ and the shipped checkpoints of models/ into share/motus_ros/."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "motus_ros"


def tree(pattern: str) -> list[str]:
    return sorted(path for path in glob(pattern, recursive=True) if not path.endswith("/"))


def data_tree(folder: str) -> list[tuple[str, list[str]]]:
    """(install dir, files) pairs that keep folder's sub-directory layout under share/motus_ros."""
    import os

    entries: dict[str, list[str]] = {}
    for path in tree(f"{folder}/**/*"):
        if os.path.isfile(path):
            entries.setdefault(os.path.join("share", PACKAGE, os.path.dirname(path)), []).append(path)
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    package_dir={"": "src"},
    packages=find_packages(
        "src", include=["motus_ros", "motus_ros.*", "motus_model", "motus_model.*", "motus_sim", "motus_sim.*"]
    ),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *data_tree("launch"),
        *data_tree("config"),
        *data_tree("models"),  # shipped checkpoints, resolved by name (motus_ros.checkpoints)
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="motus developers",
    maintainer_email="motus@example.com",
    description="ROS 2 node suite serving the Motus world model to dual-arm robots.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "motus_server = motus_ros.server:main",
            "motus_sim = motus_ros.sim.aloha_sim_node:main",
            # motus_model.cli's subcommands plus the ROS ones (eval-ros); `python -m motus_model.cli` needs no ROS.
            "motus = motus_ros.cli:main",
        ],
    },
)
