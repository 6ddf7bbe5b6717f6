"""Two-way check against the real lerobot 0.4.4 (tools/lerobot_check.sh, `make lerobot-check`).

lerobot needs its own environment (.lerobot-venv, built by the script from tools/lerobot_check/requirements.txt);
without it this test is skipped. See README "Your own data".
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".lerobot-venv" / "bin" / "python"


@pytest.mark.timeout(600)
@pytest.mark.skipif(not VENV_PYTHON.exists(), reason="no .lerobot-venv: run `make lerobot-check` once to build it")
def test_lerobot_loads_ours_and_we_load_lerobots():
    result = subprocess.run([str(ROOT / "tools" / "lerobot_check.sh")], capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "ok lerobot loads the motus-written dataset" in output
    assert "ok motus reads the lerobot-written dataset" in output
