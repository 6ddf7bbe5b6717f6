"""What `ros2 launch motus_ros aloha.launch.py ARG:=VALUE ...` starts, decided without the launch system.

aloha.launch.py only turns the `LaunchPlan` made here into launch actions, so every argument's parsing, its
defaults and the real-time settings of the simulated robot are tested here, where `launch` is not installed.
Every bad value fails before anything starts, with one line naming the argument and what it accepts.

Arguments (all optional):
    profile        robot profile: a name under config/robots/ or a path                     (aloha_sim)
    checkpoint     model folder or shipped model name; `auto` = the shipped transfer-cube model with sim:=true,
                   the random-weights preset without (a sim-trained model is never a real robot's default)  (auto)
    sim            also start motus_sim, the simulated ALOHA: true | false                     (false)
    rviz           also start rviz2 with config/motus.rviz following the profile's cameras: true | false (false)
    dry_run        true | false | profile (the robot profile's default: true for real robots)  (profile)
    steps          Euler steps per chunk: a positive integer, or auto (sim: the real-time setting, else the
                   model's default)                                                            (auto)
    torch_threads  torch threads of the model: a positive integer, or auto (sim: 1, since the simulator's
                   rendering shares the CPU; else torch's default)                             (auto)
    camera_rate    simulated cameras' rate in Hz, or auto (config/sim_realtime.yaml)           (auto)
    params_file    a params file applied last to the server and the simulator (your overrides), or none (none)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from motus_ros.checkpoints import DEFAULT_SIM_CHECKPOINT

SIM_NODE = "aloha_sim"  # the simulator's node name, the section key of config/sim.yaml
AUTO = "auto"
NONE = "none"
PROFILE_DEFAULT = "profile"
TRUE_WORDS = ("true", "1")
FALSE_WORDS = ("false", "0")

# name -> (default, one-line description): the launch file declares exactly these.
ARGUMENTS: dict[str, tuple[str, str]] = {
    "profile": ("aloha_sim", "robot profile: a name under config/robots/ or a path to a profile YAML"),
    "checkpoint": (
        AUTO,
        f"model folder or shipped model name; auto = {DEFAULT_SIM_CHECKPOINT} with sim:=true, "
        "else the preset with random weights",
    ),
    "sim": ("false", "also start the simulated ALOHA (motus_sim): true | false"),
    "rviz": ("false", "also start rviz2 (live cameras beside the imagined ones): true | false"),
    "dry_run": (PROFILE_DEFAULT, "true | false | profile (the robot profile's default)"),
    "steps": (AUTO, "Euler steps per chunk: a positive integer or auto"),
    "torch_threads": (AUTO, "torch threads of the model: a positive integer or auto (sim: 1)"),
    "camera_rate": (AUTO, "simulated cameras' rate in Hz or auto (config/sim_realtime.yaml)"),
    "params_file": (NONE, "params file applied last to the server and the simulator, or none"),
}


def config_dir() -> Path:
    """The package's config/ folder: the source tree's, else the installed share/motus_ros/config."""
    source = Path(__file__).resolve().parents[2] / "config"
    if (source / "motus_server.yaml").is_file():
        return source
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("motus_ros")) / "config"


@dataclass(frozen=True)
class RealtimeSettings:
    """The simulated robot's real-time settings, as config/sim_realtime.yaml states them (the one source)."""

    steps: int
    chunk_request_threshold: int
    camera_rate_hz: float
    torch_threads: int = 1  # the simulator's rendering shares the CPU: a second thread only waits


def realtime_settings(directory: Path | None = None) -> RealtimeSettings:
    import yaml

    data = yaml.safe_load(((directory or config_dir()) / "sim_realtime.yaml").read_text())
    return RealtimeSettings(
        steps=int(data["/**"]["ros__parameters"]["default_steps"]),
        chunk_request_threshold=int(data["/**/policy"]["ros__parameters"]["chunk_request_threshold"]),
        camera_rate_hz=float(data[SIM_NODE]["ros__parameters"]["camera_rate_hz"]),
    )


def write_parameter_files(entries: list[Any], prefix: str = "motus_") -> list[str]:
    """A plan's params entries as files: paths as they are, {section: {"ros__parameters": ...}} written to a
    temporary params file (the caller may delete those: they are the ones not under config/)."""
    import tempfile

    import yaml

    files = []
    for entry in entries:
        if isinstance(entry, dict):
            handle = tempfile.NamedTemporaryFile("w", prefix=prefix, suffix=".yaml", delete=False)
            with handle:
                yaml.safe_dump(entry, handle)
            entry = handle.name
        files.append(str(entry))
    return files


class LaunchArgumentError(ValueError):
    """A launch argument with a value it does not accept."""


def parse_bool(name: str, text: str) -> bool:
    """The one boolean parsing of every launch argument (launch's own IfCondition words: true/false/1/0)."""
    value = str(text).strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise LaunchArgumentError(f"launch argument {name}:={text!r}: expected true or false")


def _positive_int_or_auto(name: str, text: str) -> int | None:
    value = str(text).strip().lower()
    if value == AUTO:
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0 or str(number) != value:
        raise LaunchArgumentError(f"launch argument {name}:={text!r}: expected a positive integer or auto")
    return number


def _positive_float_or_auto(name: str, text: str) -> float | None:
    value = str(text).strip().lower()
    if value == AUTO:
        return None
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not (math.isfinite(number) and number > 0):
        raise LaunchArgumentError(f"launch argument {name}:={text!r}: expected a positive number (Hz) or auto")
    return number


@dataclass
class LaunchPlan:
    """The processes to start and what each gets."""

    # params files, in order (later ones win): paths, or {section: {"ros__parameters": {...}}} to be written to one
    server_parameters: list[Any]
    server_arguments: list[str]  # motus_server options before --ros-args
    sim: bool
    sim_parameters: list[Any] = field(default_factory=list)
    rviz: bool = False
    profile: str = "aloha_sim"


def make_plan(arguments: Mapping[str, str], config_dir: Path) -> LaunchPlan:
    """The plan for these launch arguments (names as in ARGUMENTS; missing ones take their default).

    config_dir: the package's config/ folder (motus_server.yaml, sim.yaml, sim_realtime.yaml).
    """
    from motus_ros.checkpoints import launch_checkpoint

    unknown = set(arguments) - set(ARGUMENTS)
    if unknown:
        raise LaunchArgumentError(f"unknown launch arguments {sorted(unknown)}; known: {sorted(ARGUMENTS)}")
    values = {name: str(arguments.get(name, default)) for name, (default, _) in ARGUMENTS.items()}
    profile = values["profile"].strip()
    if not profile:
        raise LaunchArgumentError("launch argument profile is empty: give a profile name (config/robots/) or a path")
    sim = parse_bool("sim", values["sim"])
    rviz = parse_bool("rviz", values["rviz"])
    dry_run_text = values["dry_run"].strip().lower()
    dry_run = None if dry_run_text == PROFILE_DEFAULT else parse_bool("dry_run", dry_run_text)
    steps = _positive_int_or_auto("steps", values["steps"])
    threads = _positive_int_or_auto("torch_threads", values["torch_threads"])
    camera_rate = _positive_float_or_auto("camera_rate", values["camera_rate"])
    if camera_rate is not None and not sim:
        raise LaunchArgumentError("launch argument camera_rate sets the simulated cameras: use it with sim:=true")
    params_file = values["params_file"].strip()
    extra: list[Any] = []
    if params_file and params_file.lower() != NONE:
        if not Path(params_file).expanduser().is_file():
            raise LaunchArgumentError(f"launch argument params_file:={params_file!r}: no such file")
        extra = [str(Path(params_file).expanduser())]
    checkpoint_text = values["checkpoint"].strip()
    checkpoint = launch_checkpoint("" if checkpoint_text.lower() == AUTO else checkpoint_text, sim)

    realtime = [str(config_dir / "sim_realtime.yaml")] if sim else []
    # Overrides go in files with the same section keys as config/*.yaml: a node section of a params file wins over a
    # global `-p`, and of two files the later one wins for the same key.
    everywhere: dict[str, Any] = {"profile": profile}
    if checkpoint:
        everywhere["checkpoint"] = checkpoint
    if steps is not None:
        everywhere["default_steps"] = steps
    server_overrides: dict[str, Any] = {"/**": {"ros__parameters": everywhere}}
    if dry_run is not None:
        server_overrides["/**/policy"] = {"ros__parameters": {"dry_run": dry_run}}
    if threads is None and sim:
        threads = RealtimeSettings.torch_threads
    server_arguments = ["--torch-threads", str(threads)] if threads is not None else []
    sim_parameters: list[Any] = []
    if sim:
        sim_overrides: dict[str, Any] = {"profile": profile}
        if camera_rate is not None:
            sim_overrides["camera_rate_hz"] = camera_rate
        sim_parameters = [
            str(config_dir / "sim.yaml"),
            *realtime,
            *extra,
            {SIM_NODE: {"ros__parameters": sim_overrides}},
        ]
    return LaunchPlan(
        server_parameters=[str(config_dir / "motus_server.yaml"), *realtime, *extra, server_overrides],
        server_arguments=server_arguments,
        sim=sim,
        sim_parameters=sim_parameters,
        rviz=rviz,
        profile=profile,
    )
