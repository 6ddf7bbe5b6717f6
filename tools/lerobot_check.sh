#!/usr/bin/env bash
# Two-way check against the real LeRobot (0.4.4, v3.0 format): what motus writes loads in
# lerobot.datasets.lerobot_dataset.LeRobotDataset, and what LeRobotDataset.create/add_frame/save_episode/finalize
# writes loads in motus with identical vectors and frames (to codec tolerance).
# lerobot lives in its own venv (.lerobot-venv, git-ignored), built here from tools/lerobot_check/requirements.txt.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${LEROBOT_VENV:-$ROOT/.lerobot-venv}"
HERE="$ROOT/tools/lerobot_check"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import lerobot" 2>/dev/null; then
    echo "[lerobot-check] building $VENV (lerobot 0.4.4, --no-deps, pinned deps)"
    python3.11 -m venv "$VENV"
    "$VENV/bin/pip" install -q --no-deps lerobot==0.4.4
    "$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
MOTUS=("$ROOT/tools/env.sh" python)
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
"${MOTUS[@]}" "$HERE/motus_side.py" write "$WORK/by_motus"
env -u PYTHONPATH HF_HUB_OFFLINE=1 HF_DATASETS_CACHE="$WORK/hf" "$VENV/bin/python" "$HERE/lerobot_side.py" load "$WORK/by_motus" "$WORK/loaded.npz"
"${MOTUS[@]}" "$HERE/motus_side.py" compare-load "$WORK/by_motus" "$WORK/loaded.npz"
"${MOTUS[@]}" "$HERE/motus_side.py" source "$WORK/source.npz"
env -u PYTHONPATH HF_HUB_OFFLINE=1 HF_DATASETS_CACHE="$WORK/hf" "$VENV/bin/python" "$HERE/lerobot_side.py" write "$WORK/by_lerobot" "$WORK/source.npz"
"${MOTUS[@]}" "$HERE/motus_side.py" compare-read "$WORK/by_lerobot" "$WORK/source.npz"
echo "[lerobot-check] passed"
