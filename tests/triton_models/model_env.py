"""Running a script in the model environment (.venv-triton), where Triton's stubs run the models: the app
environment has no torch or OpenVINO, so tests of ``triton_models/cpu/_shared`` code and references computed with
the models' own libraries run there, in a subprocess. ``SHARED`` is the scripts' first argument, so that they can
put the shared code on ``sys.path``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from infra.settings import Settings

SHARED = Path(__file__).resolve().parents[2] / "triton_models" / "cpu" / "_shared"


def run_in_model_env(code: str, payload: object = None, *, timeout: float = 300) -> Any:
    """Runs ``code`` with ``payload`` as JSON on stdin; returns the JSON of its last line of output."""
    result = subprocess.run(
        [str(Settings().triton_python), "-c", code, str(SHARED)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
