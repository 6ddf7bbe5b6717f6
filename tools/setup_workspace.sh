#!/usr/bin/env bash
# One idempotent setup step, run first by every entry point (make demo, make test, .ci/run):
#   1. a .venv on Python 3.11 with the pinned ROS 2 Jazzy wheels, torch (CPU) and the rest (tools/constraints.txt);
#   2. colcon build of motus_msgs (rosidl) and motus_ros (ament_python) into install/.
# Each step is skipped when its inputs have not changed since it last succeeded, so a second run takes seconds.
set -euo pipefail
trap 'echo "[setup] error: failed at line $LINENO of $0" >&2' ERR

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
log() { printf '[setup] %s\n' "$*"; }

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }

# --- 1. Python environment ---------------------------------------------------------------
# The ROS wheels exist for cp311/cp312 only; the project pins 3.11 (the version CI and developers have).
PYTHON="${MOTUS_PYTHON:-$(command -v python3.11 || true)}"
if [ -z "$PYTHON" ]; then
  echo "[setup] error: python3.11 not found (set MOTUS_PYTHON to a Python 3.11 interpreter)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  log "creating $VENV with $PYTHON"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi

req_hash="$(hash_of tools/requirements.in tools/requirements-model.txt tools/constraints.txt)"
if [ "$(cat "$VENV/.motus-requirements" 2>/dev/null)" != "$req_hash" ]; then
  log "installing pinned requirements (tools/requirements.in with tools/constraints.txt)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tools/requirements.in -c tools/constraints.txt
  echo "$req_hash" > "$VENV/.motus-requirements"
else
  log "python environment up to date"
fi

# --- 2. Wheel quirks ---------------------------------------------------------------------
# The ROS wheels' exported CMake targets name the include folders of the machine that built
# them (/opt/python/cp311-cp311/...). CMake's generate step fails while those paths are missing,
# so point them at this venv's real Python and numpy include folders.
py_include="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_include="$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')"
link_dir() {  # link_dir TARGET LINK: make LINK a symlink to TARGET unless it already is a real folder
  local target="$1" link="$2"
  if [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then return; fi
  if [ -e "$link" ] && [ ! -L "$link" ]; then return; fi
  mkdir -p "$(dirname "$link")"
  ln -sfn "$target" "$link"
}
link_dir "$py_include" /opt/python/cp311-cp311/include/python3.11
link_dir "$np_include" /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include

# --- 3. colcon build -----------------------------------------------------------------------
# The wheels install share/, lib/, include/ into the venv prefix, as /opt/ros/<distro> would be.
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"
# Each package is rebuilt only when its own inputs changed; an unchanged workspace skips colcon entirely.
build_package() {  # build_package NAME PATH INPUT...
  local name="$1" path="$2"; shift 2
  local stamp="install/.motus-build-$name" inputs hash
  # (find's complaint about a not-yet-existing folder must not end the script under set -e)
  inputs=$( { find "$@" -type f -not -path '*/__pycache__/*' 2>/dev/null || true; } | sort)
  hash="$(printf '%s\n' "$inputs" | sha256sum | cut -d' ' -f1)-$(hash_of $inputs)"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ] && [ -d "install/$name" ]; then
    log "$name up to date"
    return
  fi
  log "colcon build $name"
  # colcon does not look inside a folder that is itself a package (the root has package.xml),
  # so each package is named by path.
  # The build's chatter goes to a log file, shown only when the build fails.
  mkdir -p log
  if ! "$VENV/bin/colcon" --log-base log build --paths "$path" \
      --event-handlers console_direct- console_cohesion+ status- summary+ \
      --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF -Wno-dev \
      > "log/colcon-$name.log" 2>&1; then
    tail -n 60 "log/colcon-$name.log" >&2
    echo "[setup] error: colcon build of $name failed (full output: log/colcon-$name.log)" >&2
    exit 1
  fi
  echo "$hash" > "$stamp"
}
build_package motus_msgs src/motus_msgs src/motus_msgs
build_package motus_ros . package.xml setup.py setup.cfg resource launch config models src/motus_ros src/motus_model src/motus_sim
