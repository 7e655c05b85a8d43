"""Which chat format each generation model expects, and the prompt rendering the client does for it.

Contract (the same here and in production): ``text_input`` is already in the model's chat format. The client
renders it, because production's TensorRT-LLM ensemble tokenizes ``text_input`` as given (its preprocessing adds
only ``<|begin_of_text|>``), and the CPU models in ``triton_models/cpu`` follow the same rule. The renderings
below reproduce each model's own Jinja chat template exactly (``tests/triton_models/test_cpu_models.py`` compares
them with ``tokenizer.apply_chat_template`` in the model environment).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import msgspec

from processors.generation import ChatMessage

ChatFormat = Literal["chatml", "llama3", "plain"]


class ModelInfo(msgspec.Struct, frozen=True):
    format: ChatFormat
    # The system turn the model's own template inserts when the conversation has none.
    default_system: str = ""
    # Generation ends at the model's end-of-turn token; sending it as a stop word too costs nothing.
    stop_words: tuple[str, ...] = ()


MODELS: dict[str, ModelInfo] = {
    # SmolLM2-135M-Instruct (CPU, triton_models/cpu/llm_small).
    "llm_small": ModelInfo(
        "chatml", "You are a helpful AI assistant named SmolLM, trained by Hugging Face", ("<|im_end|>",)
    ),
    # Qwen2.5-0.5B-Instruct (CPU, optional, triton_models/cpu/llm_large).
    "llm_large": ModelInfo(
        "chatml", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", ("<|im_end|>",)
    ),
    # Llama-3-8B-Instruct behind TensorRT-LLM (triton_models/production): ensemble and BLS take the same text.
    "ensemble": ModelInfo("llama3", "", ("<|eot_id|>",)),
    "tensorrt_llm_bls": ModelInfo("llama3", "", ("<|eot_id|>",)),
    # Streams its input back: no template.
    "llm_echo": ModelInfo("plain"),
}


def model_info(model: str) -> ModelInfo:
    """Unknown models get no template (their input is passed through as is)."""
    return MODELS.get(model, ModelInfo("plain"))


_CONTROL_TOKEN = re.compile(r"<\|([^|<>\n]{0,40})\|>")


def neutralize_control_tokens(text: str) -> str:
    """Text that cannot open or close a turn: tokenizers read ``<|im_end|>`` or ``<|eot_id|>`` written in plain text
    as the real control token, so a question or a document could otherwise speak as the system or the assistant.
    The look-alike brackets keep the text readable."""
    return _CONTROL_TOKEN.sub(lambda m: f"\u2039|{m.group(1)}|\u203a", text)


def render_chat(model: str, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True) -> str:
    """``text_input`` for ``model``: the conversation in its chat format, ending with the assistant's turn."""
    info = model_info(model)
    if info.format == "plain":
        return "\n\n".join(message.content for message in messages)
    turns = [ChatMessage(m.role, neutralize_control_tokens(m.content)) for m in messages]
    if info.default_system and (not turns or turns[0].role != "system"):
        turns.insert(0, ChatMessage("system", info.default_system))
    if info.format == "chatml":
        text = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in turns)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")
    # llama3, without <|begin_of_text|> (production's preprocessing adds it).
    text = "".join(f"<|start_header_id|>{m.role}<|end_header_id|>\n\n{m.content.strip()}<|eot_id|>" for m in turns)
    return text + ("<|start_header_id|>assistant<|end_header_id|>\n\n" if add_generation_prompt else "")
