"""Shipped checkpoints: turn a `checkpoint` argument (a folder or the name of a model shipped in models/) into a folder.

    resolve_checkpoint("/data/runs/x/checkpoints/step_2000")   # an existing path: used as is
    resolve_checkpoint("motus-small-aloha-transfer-cube")        # a shipped name: models/<name> (source tree) or
                                                                 # share/motus_ros/models/<name> (installed)

The repository's models/ folder is installed into share/motus_ros/models/ (setup.py). The source tree wins over the
install, so a checkpoint updated in models/ is used at once from a source checkout. Pure Python: no ROS import
(ament_index is only asked, lazily, for the installed share folder), so the launch file and the `motus` CLI can use it.

Only the simulated robot gets a shipped default (DEFAULT_SIM_CHECKPOINT, trained in gym-aloha): motus_server
itself never falls back to it, so a sim-trained model is never the silent default on a real robot.
"""

from __future__ import annotations

import json
from pathlib import Path

PACKAGE = "motus_ros"
MODELS_FOLDER = "models"
# Trained on the scripted gym-aloha transfer-cube demonstrations (models/<name>/README.md is its model card).
DEFAULT_SIM_CHECKPOINT = "motus-small-aloha-transfer-cube"
DEFAULT_SIM_INSTRUCTION = "transfer the cube to the other arm"


def model_roots() -> list[Path]:
    """Folders that may hold shipped models, first match wins: the source tree's models/, the installed share."""
    here = Path(__file__).resolve()
    roots = [here.parents[2] / MODELS_FOLDER] if here.parents[1].name == "src" else []  # run from the source tree
    try:
        from ament_index_python.packages import get_package_share_directory

        roots.append(Path(get_package_share_directory(PACKAGE)) / MODELS_FOLDER)
    except (
        ImportError,
        LookupError,
        ValueError,
    ):  # no ament index, or motus_ros not installed (PackageNotFoundError is a KeyError)
        pass
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


# Keys every Motus config.json has; models/ also ships other folders with a config.json (the latent-action VAE).
_MOTUS_CONFIG_KEYS = ("video", "action", "latents", "temporal")


def _is_checkpoint(folder: Path) -> bool:
    """A Motus checkpoint folder: its config.json is a Motus config, not another model's."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and all(key in config for key in _MOTUS_CONFIG_KEYS)


def shipped_models() -> list[str]:
    """Names of the shipped checkpoint folders (models/<name>/config.json) found in model_roots()."""
    names = {child.name for root in model_roots() if root.is_dir() for child in root.iterdir() if _is_checkpoint(child)}
    return sorted(names)


def shipped_model_path(name: str) -> Path | None:
    """models/<name> of the first root that has it, else None."""
    for root in model_roots():
        if _is_checkpoint(root / name):
            return root / name
    return None


def resolve_checkpoint(value: str) -> str:
    """The checkpoint folder meant by `value`: an existing path as is, else a shipped model name.

    Raises FileNotFoundError naming the shipped models when `value` is neither (and ValueError when empty)."""
    value = str(value).strip()
    if not value:
        raise ValueError("empty checkpoint: give a checkpoint folder or a shipped model name")
    path = Path(value).expanduser()
    if path.exists():
        return str(path)
    if "/" not in value and "\\" not in value:
        found = shipped_model_path(value)
        if found is not None:
            return str(found)
    shipped = shipped_models()
    where = ", ".join(str(root) for root in model_roots())
    raise FileNotFoundError(
        f"checkpoint {value!r} is neither an existing folder nor a shipped model name; shipped models: "
        f"{', '.join(shipped) if shipped else '(none found)'} (looked in {where})"
    )


def launch_checkpoint(checkpoint: str, sim: bool) -> str:
    """The checkpoint aloha.launch.py passes to motus_server: the given one, else the shipped sim model when the
    simulated robot is launched (sim:=true), else "" (the server's random-weights preset, with its warning)."""
    checkpoint = checkpoint.strip()
    if checkpoint:
        return checkpoint
    return DEFAULT_SIM_CHECKPOINT if sim else ""
