"""The ``embedder_bulk`` model: all-MiniLM-L6-v2 embeddings (``_shared/embedder_model.py``); contract
``schemas.triton.EMBEDDING_INPUTS`` / ``EMBEDDING_OUTPUTS``. Serves ingestion, at a lower CPU priority."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_shared"))

from embedder_model import EmbedderModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
