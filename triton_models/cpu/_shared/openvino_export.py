"""Export the chat models to OpenVINO IR once, at set-up (``infra/scripts/setup.sh`` runs this).

Runs in ``.venv-openvino``: optimum-intel's exporter, which pins its own transformers version, beside the model
environment's torch (a ``.pth`` file puts ``.venv-triton``'s packages on its path). Triton itself only needs
``openvino-genai`` at run time. The input is the fp32 copy that ``model_files.py`` writes; the output goes to a
temporary folder beside the target and is renamed into place once complete, so an interrupted export is redone.

    .venv-openvino/bin/python triton_models/cpu/_shared/openvino_export.py [--weights fp32 int8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from model_files import ModelFileError, building, converted_folder, load_causal_lm, openvino_folder, source


def export(kind: str, weights: str) -> Path | None:
    try:
        src = source(kind)
    except ModelFileError as exc:
        print(f"{kind}: skipped ({exc})")
        return None
    target = openvino_folder(src, weights)
    if (target / ".complete").exists():
        return target
    if not (converted_folder(src) / ".complete").exists():
        load_causal_lm(src)  # writes the fp32 copy the exporter reads
    started = time.monotonic()
    with building(target) as tmp:
        cli = Path(sys.executable).with_name("optimum-cli")
        command = [str(cli), "export", "openvino", "--model", str(converted_folder(src)),
                   "--task", "text-generation-with-past", "--weight-format", weights, str(tmp)]  # fmt: skip
        # The exporter's tracer warns at length about constants it records; show its output only when it fails.
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"exporting {kind} to OpenVINO failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
        (tmp / ".complete").write_text(weights)
    print(f"{kind}: OpenVINO IR ({weights} weights) in {target} after {time.monotonic() - started:.0f} s")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["smollm2", "qwen2.5"])
    parser.add_argument("--weights", nargs="+", default=["fp32"], choices=["fp32", "int8"])
    args = parser.parse_args()
    for kind in args.kinds:
        for weights in args.weights:
            export(kind, weights)


if __name__ == "__main__":
    main()
