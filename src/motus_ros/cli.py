"""The installed `motus` command: motus_model.cli's subcommands (train, eval, ...) plus the ROS ones.

    motus eval-ros --episodes 10 --out outputs/eval_ros/transfer_cube   closed loop through motus_sim + motus_server

`python -m motus_model.cli` stays the ROS-free entry point (same subcommands, without eval-ros).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _eval_ros_arguments(parser: argparse.ArgumentParser) -> None:
    from motus_ros.evaluation import add_arguments

    add_arguments(parser)


def _eval_ros(args: argparse.Namespace) -> int:
    from motus_ros.evaluation import run  # imports rclpy: only when the subcommand runs

    return run(args)


def register() -> None:
    """Add the ROS subcommands to motus_model.cli (once per process)."""
    from motus_model import cli

    try:
        cli.register_command(
            "eval-ros",
            "closed-loop success rate through the ROS suite in real time (motus_sim + motus_server)",
            _eval_ros_arguments,
            _eval_ros,
        )
    except ValueError:  # already registered (main called twice in one process)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    from motus_model import cli

    register()
    return cli.main(None if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
