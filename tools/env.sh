#!/usr/bin/env bash
# Runs a command inside the built workspace: the venv, then the colcon install space (motus_msgs, motus_ros).
# Usage: tools/env.sh COMMAND [ARGS...]   (run tools/setup_workspace.sh first; make does)
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/.venv/bin/activate"
export AMENT_PREFIX_PATH="$ROOT/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# shellcheck disable=SC1091
source "$ROOT/install/setup.bash"
# Keep DDS traffic on this machine unless the user says otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec "$@"
