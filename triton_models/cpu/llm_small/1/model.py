"""Chat model on CPU with step-level continuous batching; the code is shared in ``triton_models/cpu/_shared``."""

import sys
from pathlib import Path

# Triton models may not import project code; the repository's own _shared folder holds the engine.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_shared"))

from triton_chat_model import ChatModel


class TritonPythonModel(ChatModel):
    pass
