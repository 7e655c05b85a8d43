"""Step-level continuous batching for a causal LM on CPU (transformers + torch), behind Triton's decoupled API.

One background thread owns the model. Each step it

1. admits waiting requests (up to ``max_active``): their prompts are prefilled together in one left-padded
   forward, the first token is sampled from that forward and sent at once (time to first token), and their KV
   caches are merged into the running batch (left padding, so every row's cache ends at the same column);
2. runs ONE decode forward for every active sequence (``input_ids [B, 1]``, per-row ``position_ids`` and an
   attention mask that hides each row's padding) and samples one token per row with that row's parameters;
3. streams each row's new text, and retires rows that hit EOS, ``max_tokens``, a stop word, or were cancelled
   (``request.is_cancelled()``, checked every step), dropping their cache rows.

So N concurrent streams cost about one forward per token step instead of N, and a new request waits at most one
step to join. ``execute`` only queues requests and returns: in decoupled mode the responses are sent from the
engine thread through each request's response sender, which is what lets Triton hand us new requests while
earlier ones are still generating.

Multi-LoRA: a request may name a LoRA adapter (``lora_name``, e.g. ``tenant/sha16``: a folder under ``lora_dir``
holding PEFT's ``adapter_config.json`` and ``adapter_model.safetensors``, as ``ragstream finetune`` writes them).
The engine loads an adapter the first time a request names it (no restart), keeps up to ``max_loras`` of them on
the one base model (when full, a new one replaces the least recently used adapter that no running request uses;
when every loaded adapter is in use, the new request fails with a retryable message), and runs every forward with
PEFT's per-row ``adapter_names``: each row of a mixed batch gets its own adapter, and a row without one gets the
base model (``__base__``), never another request's adapter.

The prompt (``text_input``) is used as is, already in the model's chat format: the client renders the chat
template (``processors/models.py``), exactly as production's TensorRT-LLM ensemble expects pre-templated text.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import queue
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class GenRequest:
    """One generation request, independent of Triton (tests and the in-process benchmark use it directly)."""

    prompt: str
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop_words: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = True
    request_id: str = ""
    # Called with each new piece of text, then once with final=True (piece may be "" or, if stream=False, all).
    emit: object = None  # Callable[[str, bool], None]
    # Called with an error message when the request fails; the request is then finished.
    fail: object = None  # Callable[[str], None]
    is_cancelled: object = None  # Callable[[], bool]
    # A LoRA adapter under the engine's lora_dir ("" = the base model).
    lora_name: str = ""
    # Set by the engine once it has tokenized the prompt (before the first emit): the usage record's prompt tokens.
    prompt_tokens: int = 0


BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch
_LORA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,99})?$")


class LoraError(ValueError):
    """A request named an adapter the engine cannot serve (bad name, missing folder, too many loaded)."""


@dataclass
class Answer:
    """What every engine keeps per request while it generates: the answer's tokens and text, how much of the text
    was sent, when cancellation was last asked, and why it ended ("", "stop", "length", "cancelled")."""

    req: GenRequest
    ids: list[int] = field(default_factory=list)
    text: str = ""
    sent_chars: int = 0
    checked_at: float = 0.0
    done: str = ""

    def cancel_due(self, now: float, interval_s: float) -> bool:
        """Whether the client gave up; is_cancelled() is a round trip to the Triton process, so it is asked at most
        every ``interval_s`` per request."""
        if self.req.is_cancelled is None or now - self.checked_at < interval_s:
            return False
        self.checked_at = now
        return bool(self.req.is_cancelled())

    def set_text(self, text: str) -> None:
        """The decoded text so far, cut at the first stop word (which ends the answer)."""
        cut = stop_index(text, self.req.stop_words)
        if cut is not None:
            text = text[:cut]
            self.done = "stop"
        self.text = text

    def take_piece(self) -> str:
        """The text not sent yet that can be streamed now: all of it once the answer ended, else held back at a
        partial character or a stop word's prefix."""
        ready = len(self.text) if self.done else safe_prefix(self.text, self.req.stop_words)
        if ready <= self.sent_chars:
            return ""
        piece = self.text[self.sent_chars : ready]
        self.sent_chars = ready
        return piece

    def final_piece(self) -> str:
        """What the final response carries: the whole text for a non-streaming request that was not cancelled."""
        return "" if self.done == "cancelled" or self.req.stream else self.text


@dataclass
class _Row(Answer):
    adapter: str = BASE_ADAPTER  # PEFT adapter name for this row
    generator: torch.Generator | None = None


class QueuedEngine:
    """What every chat engine here shares: a queue of requests and the one thread that owns the model."""

    def _start(self, thread_name: str) -> None:
        self._queue: queue.Queue[GenRequest | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=thread_name, daemon=True)
        self._thread.start()

    def submit(self, request: GenRequest) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._stop.set()
        self._queue.put(None)  # wakes the thread up
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        raise NotImplementedError


class ChatEngine(QueuedEngine):
    def __init__(
        self,
        model,
        tokenizer,
        *,
        name: str,
        max_active: int = 16,
        max_context: int = 4096,
        cancel_check_s: float = 0.05,
        lora_dir: str | Path | None = None,
        max_loras: int = 8,
        log=print,
    ) -> None:
        self.cancel_check_s = cancel_check_s
        self.model = model
        self.base_model = model
        self.lora_dir = Path(lora_dir).resolve() if lora_dir else None
        self.max_loras = max_loras
        self.loras: OrderedDict[str, str] = OrderedDict()  # lora_name -> PEFT adapter name, least recently used first
        self.tokenizer = tokenizer
        self.name = name
        self.max_active = max_active
        self.max_context = max_context
        self.log = log
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos_ids = end_of_turn_ids(
            tokenizer, getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        )
        # transformers 5 renamed the forward's ``past_key_values`` argument to ``cache``.
        params = inspect.signature(model.forward).parameters  # the base model's, also once PEFT wraps it
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._rows: list[_Row] = []
        self._cache = None
        self._mask: torch.Tensor | None = None  # [B, T] 1 = real token
        self._pos: torch.Tensor | None = None  # [B] next position id
        self._last: torch.Tensor | None = None  # [B] last sampled token
        self.steps = 0
        self.forward_s = 0.0
        self.other_s = 0.0
        self.max_batch_seen = 0
        self._start(f"{name}-engine")

    # Engine thread --------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                waiting = self._take_waiting(block=not self._rows)
                if self._stop.is_set():
                    break
                if waiting:
                    self._admit(waiting)
                if self._rows:
                    self._decode_step()
            except Exception as exc:  # fail every request in flight, keep serving new ones
                self.log(f"{self.name}: engine step failed: {type(exc).__name__}: {exc}")
                for row in self._rows:
                    self._fail(row.req, f"{self.name} failed: {exc}")
                self._reset()
        for row in self._rows:
            self._fail(row.req, f"{self.name} is shutting down")
        self._reset()

    def _take_waiting(self, *, block: bool) -> list[GenRequest]:
        return take_waiting(self._queue, self.max_active - len(self._rows), block=block)

    def _reset(self) -> None:
        self._rows, self._cache, self._mask, self._pos, self._last = [], None, None, None, None

    @staticmethod
    def _fail(req: GenRequest, message: str) -> None:
        fail_quietly(req, message)

    def _admit(self, waiting: list[GenRequest]) -> None:
        fresh: list[tuple[GenRequest, list[int], str]] = []
        for req in waiting:
            if req.is_cancelled is not None and req.is_cancelled():
                self.log(f"{self.name}: request '{req.request_id}' cancelled after 0 tokens")
                req.emit("", True)
                continue
            ids = self.tokenizer(req.prompt, add_special_tokens=False)["input_ids"]
            if not ids:
                ids = [self.pad_id]
            req.prompt_tokens = len(ids)
            if len(ids) >= self.max_context:
                self._fail(req, f"{self.name}: prompt is {len(ids)} tokens; the context is {self.max_context}")
                continue
            req.max_tokens = max(0, min(req.max_tokens, self.max_context - len(ids)))
            if req.max_tokens == 0:
                req.emit("", True)
                continue
            try:
                busy = {row.adapter for row in self._rows} | {adapter for _, _, adapter in fresh}
                adapter = self._adapter_for(req.lora_name, busy)
            except LoraError as exc:
                self._fail(req, f"{self.name}: {exc}")
                continue
            fresh.append((req, ids, adapter))
        if not fresh:
            return
        # Prefill the newcomers together, left-padded.
        width = max(len(ids) for _, ids, _ in fresh)
        input_ids = torch.full((len(fresh), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(fresh), width), dtype=torch.long)
        for i, (_, ids, _) in enumerate(fresh):
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[i, width - len(ids) :] = 1
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position_ids,
                use_cache=True,
                logits_to_keep=1,
                **self._adapter_args([adapter for _, _, adapter in fresh]),
            )
        logits = out.logits[:, -1, :]
        rows = [_Row(req=req, adapter=adapter) for req, _, adapter in fresh]
        for row in rows:
            if row.req.seed is not None:
                row.generator = torch.Generator().manual_seed(int(row.req.seed))
        first = self._sample(logits, rows)
        pos = mask.sum(-1)
        self._merge(rows, _cache_of(out), mask, pos, first)
        self._after_tokens(first.tolist(), rows)

    def _adapter_args(self, adapters: list[str]) -> dict:
        """Once any adapter is loaded the model is a PeftModel, whose default would apply its active adapter to
        every row: always name each row's adapter (the base model's rows too)."""
        return {"adapter_names": adapters} if self.loras else {}

    def _adapter_for(self, lora_name: str, busy: set[str]) -> str:
        """The PEFT adapter name serving ``lora_name``, loading it from ``lora_dir`` the first time; ``busy``: the
        adapters of rows in the batch, which must not be evicted to make room."""
        if not lora_name:
            return BASE_ADAPTER
        loaded = self.loras.get(lora_name)
        if loaded is not None:
            self.loras.move_to_end(lora_name)
            return loaded
        if self.lora_dir is None:
            raise LoraError(f"adapter {lora_name!r} requested but this model serves no adapters (no lora_dir)")
        if not _LORA_NAME.match(lora_name) or ".." in lora_name:
            raise LoraError(f"invalid adapter name {lora_name!r}")
        folder = (self.lora_dir / lora_name).resolve()
        if self.lora_dir not in folder.parents or not (folder / "adapter_config.json").is_file():
            raise LoraError(f"no adapter {lora_name!r} under {self.lora_dir}")
        victim = None
        if len(self.loras) >= self.max_loras:
            victim = next((name for name, adapter in self.loras.items() if adapter not in busy), None)
            if victim is None:
                raise LoraError(
                    f"all {len(self.loras)} loaded adapters are in use by running requests (max_loras); retry shortly"
                )
        adapter = "lora_" + hashlib.sha256(lora_name.encode()).hexdigest()[:16]  # PEFT names cannot hold '/' '.'
        started = time.perf_counter()
        try:
            import peft
        except ImportError:
            raise LoraError("peft is not installed in the model environment") from None
        if not self.loras:
            self.model = peft.PeftModel.from_pretrained(self.base_model, str(folder), adapter_name=adapter,
                                                        is_trainable=False)  # fmt: skip
        else:
            self.model.load_adapter(str(folder), adapter_name=adapter, is_trainable=False)
        self.model.eval()
        self.loras[lora_name] = adapter
        if victim is not None:  # after the load: a failed load leaves the loaded adapters as they were
            self.model.delete_adapter(self.loras.pop(victim))
            self.log(f"{self.name}: evicted adapter {victim} (least recently used) for {lora_name}")
        self.log(f"{self.name}: loaded adapter {lora_name} in {time.perf_counter() - started:.2f}s")
        return adapter

    def _merge(self, rows, cache, mask, pos, last) -> None:
        if self._cache is None:
            self._rows, self._cache, self._mask, self._pos, self._last = list(rows), cache, mask, pos, last
            return
        old_t, new_t = self._mask.shape[1], mask.shape[1]
        width = max(old_t, new_t)
        for layer_old, layer_new in zip(self._cache.layers, cache.layers, strict=True):
            layer_old.keys = torch.cat([_left_pad(layer_old.keys, width), _left_pad(layer_new.keys, width)], 0)
            layer_old.values = torch.cat([_left_pad(layer_old.values, width), _left_pad(layer_new.values, width)], 0)
        self._mask = torch.cat([_left_pad(self._mask, width), _left_pad(mask, width)], 0)
        self._pos = torch.cat([self._pos, pos])
        self._last = torch.cat([self._last, last])
        self._rows.extend(rows)

    def _decode_step(self) -> None:
        started = time.perf_counter()
        batch = len(self._rows)
        self.max_batch_seen = max(self.max_batch_seen, batch)
        mask = torch.cat([self._mask, torch.ones((batch, 1), dtype=self._mask.dtype)], 1)
        with torch.inference_mode():
            out = self.model(
                input_ids=self._last[:, None],
                attention_mask=mask,
                position_ids=self._pos[:, None],
                use_cache=True,
                **{self._cache_arg: self._cache},
                **self._adapter_args([row.adapter for row in self._rows]),
            )
        self.steps += 1
        self._cache, self._mask, self._pos = _cache_of(out), mask, self._pos + 1
        forward_done = time.perf_counter()
        tokens = self._sample(out.logits[:, -1, :], self._rows)
        self._last = tokens
        self._after_tokens(tokens.tolist(), self._rows)
        self.forward_s += forward_done - started
        self.other_s += time.perf_counter() - forward_done
        if self.steps % 500 == 0:
            self.log(
                f"{self.name}: {self.steps} steps, forward {self.forward_s:.1f}s, sampling+sending "
                f"{self.other_s:.1f}s, largest batch {self.max_batch_seen}"
            )

    def _sample(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        greedy = logits.argmax(-1)
        chosen = greedy.clone()
        for i, row in enumerate(rows):
            req = row.req
            if req.temperature is None or req.temperature <= 0:
                continue
            scores = logits[i].float() / float(req.temperature)
            if req.top_k and req.top_k > 0:
                kth = torch.topk(scores, min(int(req.top_k), scores.numel())).values[-1]
                scores = scores.masked_fill(scores < kth, float("-inf"))
            probs = torch.softmax(scores, -1)
            if req.top_p is not None and 0 < req.top_p < 1:
                sorted_probs, order = torch.sort(probs, descending=True)
                keep = sorted_probs.cumsum(-1) - sorted_probs < req.top_p
                keep[0] = True
                filtered = torch.zeros_like(probs)
                filtered[order[keep]] = sorted_probs[keep]
                probs = filtered / filtered.sum()
            chosen[i] = torch.multinomial(probs, 1, generator=row.generator).item()
        return chosen

    def _after_tokens(self, tokens: list[int], rows: list[_Row]) -> None:
        now = time.monotonic()
        for row, token in zip(rows, tokens, strict=True):
            req = row.req
            if row.cancel_due(now, self.cancel_check_s):
                row.done = "cancelled"
                self.log(f"{self.name}: request '{req.request_id}' cancelled after {len(row.ids)} tokens")
                continue
            if token in self.eos_ids:
                row.done = "stop"
            else:
                row.ids.append(token)
                row.set_text(self.tokenizer.decode(row.ids, skip_special_tokens=True))
                if not row.done and len(row.ids) >= req.max_tokens:
                    row.done = "length"
            if req.stream and (piece := row.take_piece()):
                self._emit(row, piece, False)
        finished = [i for i, row in enumerate(rows) if row.done]
        if not finished:
            return
        for i in finished:
            self._emit(rows[i], rows[i].final_piece(), True)
        # Finished rows leave the batch (newly admitted rows are in self._rows already, after the merge).
        keep = [i for i, row in enumerate(self._rows) if not row.done]
        if len(keep) < len(self._rows):
            self._select(keep)

    def _emit(self, row: _Row, piece: str, final: bool) -> None:
        try:
            row.req.emit(piece, final)
        except Exception as exc:  # the client is gone; stop generating for it
            self.log(f"{self.name}: request '{row.req.request_id}' send failed ({exc}); dropping it")
            row.done = row.done or "cancelled"

    def _select(self, keep: list[int]) -> None:
        if not keep:
            self._reset()
            return
        index = torch.tensor(keep, dtype=torch.long)
        self._rows = [self._rows[i] for i in keep]
        self._mask = self._mask.index_select(0, index)
        # Drop padding columns that no remaining row needs.
        real = self._mask.sum(0) > 0
        start = int(torch.nonzero(real)[0]) if bool(real.any()) else 0
        self._mask = self._mask[:, start:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:, :]
            layer.values = layer.values.index_select(0, index)[:, :, start:, :]
        self._pos = self._pos.index_select(0, index)
        self._last = self._last.index_select(0, index)


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Pad dim -1 (mask [B, T]) or dim 2 (cache [B, H, T, D]) on the left with zeros up to ``width``."""
    if tensor.dim() == 2:
        missing = width - tensor.shape[1]
        if missing <= 0:
            return tensor
        return torch.cat([torch.zeros((tensor.shape[0], missing), dtype=tensor.dtype), tensor], 1)
    missing = width - tensor.shape[2]
    if missing <= 0:
        return tensor
    pad = torch.zeros((tensor.shape[0], tensor.shape[1], missing, tensor.shape[3]), dtype=tensor.dtype)
    return torch.cat([pad, tensor], 2)


# Shared with openvino_engine.py -----------------------------------------------------------------------------------


def take_waiting(requests: queue.Queue, room: int, *, block: bool) -> list[GenRequest]:
    """Up to ``room`` queued requests; waits up to 0.5 s for the first when ``block`` (nothing is running)."""
    taken: list[GenRequest] = []
    if room <= 0:
        return taken
    try:
        item = requests.get(timeout=0.5) if block else requests.get_nowait()
    except queue.Empty:
        return taken
    while True:
        if item is not None:  # None only wakes the engine thread up (close)
            taken.append(item)
        if len(taken) >= room:
            break
        try:
            item = requests.get_nowait()
        except queue.Empty:
            break
    return taken


def fail_quietly(req: GenRequest, message: str) -> None:
    """Report a failed request; its client may be gone already."""
    with contextlib.suppress(Exception):
        req.fail(message)


def end_of_turn_ids(tokenizer, generation_eos=None) -> set[int]:
    """Token ids that end an answer: the tokenizer's EOS, ChatML's and Qwen's end tokens, and the generation
    config's ``eos_token_id`` (an int or a list)."""
    eos: set[int] = set()
    for token in (tokenizer.eos_token, "<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        if token is None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            eos.add(token_id)
    if isinstance(generation_eos, int):
        eos.add(generation_eos)
    elif isinstance(generation_eos, list):
        eos.update(generation_eos)
    return eos


def stop_index(text: str, stop_words) -> int | None:
    hits = [text.find(word) for word in stop_words if word and word in text]
    return min(hits) if hits else None


def safe_prefix(text: str, stop_words) -> int:
    """How much of ``text`` can be sent now: hold back a trailing partial character or a stop word's prefix."""
    end = len(text)
    while end > 0 and text[end - 1] == "\ufffd":
        end -= 1
    for word in stop_words:
        for size in range(min(len(word) - 1, end), 0, -1):
            if text[:end].endswith(word[:size]):
                end -= size
                break
    return end


__all__ = [
    "Answer",
    "ChatEngine",
    "GenRequest",
    "QueuedEngine",
    "end_of_turn_ids",
    "fail_quietly",
    "safe_prefix",
    "stop_index",
    "take_waiting",
]
