# Source this file to put the built workspace on the shell's PATH:
#   source tools/activate.sh
# It activates .venv (ROS 2 wheels, torch, ...), sources the colcon install space (motus_msgs, motus_ros), and puts
# motus_ros's executables (motus_server, motus_sim, motus; installed in lib/motus_ros, where `ros2 run` looks) on PATH.
_motus_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$_motus_root/.venv/bin/activate"
export AMENT_PREFIX_PATH="$_motus_root/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# shellcheck disable=SC1091
source "$_motus_root/install/setup.bash"
export PATH="$_motus_root/install/motus_ros/lib/motus_ros:$PATH"
# Keep DDS traffic on this machine unless the user says otherwise; render MuJoCo headless.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
unset _motus_root
