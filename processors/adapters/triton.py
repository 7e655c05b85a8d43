"""The one async Triton client every stage uses (gRPC, ``tritonclient.grpc.aio``); a :class:`Generator`.

Generation speaks the TensorRT-LLM ensemble contract in :mod:`schemas.triton`, so the same code streams from the
CPU models in ``triton_models/cpu`` and from TensorRT-LLM engines in production. Closing or cancelling the
iterator cancels the request inside Triton (the model sees ``request.is_cancelled()``).
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from processors.adapters.chat_formats import model_info, render_chat
from processors.adapters.trtllm_lora import LoraFormatError, TrtllmLora, load_peft_adapter, task_id_for
from processors.generation import (
    ChatMessage,
    GenerationError,
    GenerationParams,
    StreamStats,
    next_read_wait,
    retried_before_output,
)
from processors.telemetry import ModelCall
from schemas.triton import (
    GENERATION_INPUTS,
    LORA_CONFIG,
    LORA_NAME,
    LORA_TASK_ID,
    LORA_WEIGHTS,
    PROMPT_TOKENS,
    TensorSpec,
)

_SPECS = {spec.name: spec for spec in (*GENERATION_INPUTS, LORA_NAME)}

# How a model takes a request's LoRA adapter, read from its declared inputs: by name from the adapter folder (the CPU
# chat models' ``lora_name``), as TensorRT-LLM's task id and tensors (``lora_task_id``), or not at all.
LoraInput = Literal["name", "trtllm", "none"]
# TensorRT-LLM's answer to a task id its LoRA cache no longer holds (evicted, or another server): send the weights.
_LORA_NOT_CACHED = re.compile(r"LoRA task \d+ not found in cache")
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[0-9a-f]{16}$")


class TritonError(GenerationError):
    """Triton failed or could not be reached (see :class:`GenerationError` for ``retryable``/``before_output``)."""


# gRPC statuses after which the same request may succeed if sent again.
_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "UNKNOWN")


def _status_of(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    value = status() if callable(status) else getattr(exc, "code", lambda: "")()
    return str(value or "").rsplit(".", 1)[-1].upper()


def _classify(model: str, exc: BaseException, *, before_output: bool) -> TritonError:
    if isinstance(exc, TritonError):
        return exc
    # grpc.aio errors surface as AioRpcError (an Exception), Triton's as InferenceServerException.
    message = exc.message() or str(exc) if isinstance(exc, InferenceServerException) else f"{type(exc).__name__}: {exc}"
    status = _status_of(exc)
    retryable = status in _TRANSIENT or isinstance(exc, TimeoutError)
    return TritonError(f"{model}: {message}", retryable=retryable, before_output=before_output, status=status)


def _tensor(name: str, value: Any) -> grpcclient.InferInput:
    spec = _SPECS[name]
    if spec.data_type == "TYPE_STRING":
        items = [value] if isinstance(value, str) else list(value)
        array = np.array([[item.encode("utf-8") for item in items]], dtype=np.object_)
    else:
        dtype = {
            "TYPE_INT32": np.int32,
            "TYPE_UINT64": np.uint64,
            "TYPE_FP32": np.float32,
            "TYPE_BOOL": np.bool_,
        }
        array = np.array([[value]], dtype=dtype[spec.data_type])
    return _input(spec, array)


def _input(spec: TensorSpec, array: np.ndarray[Any, Any]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(spec.name, list(array.shape), spec.client_dtype)
    tensor.set_data_from_numpy(array)
    return tensor


def generation_inputs(
    prompt: str, params: GenerationParams, *, stream: bool = True, model: str = ""
) -> list[grpcclient.InferInput]:
    """The request's tensors; ``lora_name`` only for the model the adapter was trained for (``params.lora_model``)."""
    inputs = [
        _tensor("text_input", prompt),
        _tensor("max_tokens", params.max_tokens),
        _tensor("stream", stream),
        _tensor("temperature", params.temperature),
        _tensor("top_p", params.top_p),
    ]
    if params.top_k:
        inputs.append(_tensor("top_k", params.top_k))
    if params.stop_words:
        inputs.append(_tensor("stop_words", params.stop_words))
    if params.seed is not None:
        inputs.append(_tensor("seed", params.seed))
    if params.lora_name and model and model == params.lora_model:
        inputs.append(_tensor(LORA_NAME.name, params.lora_name))
    return inputs


def trtllm_lora_inputs(lora: TrtllmLora, *, with_weights: bool) -> list[grpcclient.InferInput]:
    """TensorRT-LLM's LoRA tensors for one request: the task id always, the weights and their layout only when the
    engine's LoRA cache may not hold the adapter yet (they are megabytes per request)."""
    tensors = [_input(LORA_TASK_ID, np.array([[lora.task_id]], dtype=np.uint64))]
    if with_weights:
        tensors += [_input(LORA_WEIGHTS, lora.weights[None]), _input(LORA_CONFIG, lora.config[None])]
    return tensors


def _text_of(result: Any) -> str:
    array = result.as_numpy("text_output")
    if array is None:
        return ""
    return "".join(item.decode("utf-8", errors="replace") for item in array.reshape(-1))


def _prompt_tokens_of(result: Any) -> int | None:
    """The prompt's token count if this response carries it (the first one does, on models that report it)."""
    array = result.as_numpy(PROMPT_TOKENS.name)
    return None if array is None or array.size == 0 else int(array.reshape(-1)[0])


_MAX_MESSAGE = 2**31 - 1
# gRPC's default reconnect backoff grows to two minutes: after a Triton restart a worker would keep failing long
# after the server is back. Cap it at a second.
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class TritonClient:
    """A long-lived connection to one Triton server. Create once per process; safe for concurrent use.

    Deadlines: ``timeout_s`` bounds a whole ``infer`` call. A stream is bounded by progress, not by its length (a
    256-token answer on a 2-core CPU takes longer than any sensible request timeout): its first token must come
    within ``timeout_s`` (retries included; ``first_token_timeout_s``, when set, bounds each attempt's wait), each
    later piece within ``timeout_s`` of the previous one, and the whole stream within ``max_stream_s``.

    Retries: ``infer`` (embedder, reranker: pure functions) retries transient failures; ``generate`` retries only
    before its first token, where a retry cannot repeat text the caller has seen.

    LoRA adapters (``params.lora_name``, "tenant/sha16" under ``adapters_dir``): a model that declares ``lora_name``
    loads the adapter itself; to a TensorRT-LLM model (it declares ``lora_task_id``) the client sends the adapter,
    converted from PEFT's files, with the first request for it, and its task id alone after that; when the engine's
    LoRA cache has evicted it, the request is sent again with the weights.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        first_token_timeout_s: float | None = None,
        max_stream_s: float = 600.0,
        retries: int = 2,
        backoff_s: float = 0.1,
        adapters_dir: Path | None = None,
        max_cached_adapters: int = 16,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.first_token_timeout_s = first_token_timeout_s
        self.max_stream_s = max_stream_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.adapters_dir = adapters_dir
        self.max_cached_adapters = max_cached_adapters
        self._client = grpcclient.InferenceServerClient(url=url, channel_args=_CHANNEL_ARGS)
        self._lora_inputs: dict[str, LoraInput] = {}
        self._trtllm_loras: OrderedDict[str, TrtllmLora] = OrderedDict()  # converted adapters, least recent first
        self._lora_uploaded: set[tuple[str, int]] = set()  # (model, task id) whose weights a request carried

    async def lora_input(self, model: str) -> LoraInput:
        """How ``model`` takes an adapter, from its metadata (asked once per model)."""
        kind = self._lora_inputs.get(model)
        if kind is None:
            try:
                metadata = await self._client.get_model_metadata(model, as_json=True, client_timeout=self.timeout_s)
            except Exception as exc:
                raise _classify(model, exc, before_output=True) from None
            names = {tensor["name"] for tensor in metadata.get("inputs", [])}
            kind = "trtllm" if LORA_TASK_ID.name in names else "name" if LORA_NAME.name in names else "none"
            self._lora_inputs[model] = kind
        return kind

    async def trtllm_lora(self, name: str) -> TrtllmLora:
        """Adapter ``name`` ("tenant/sha16") as TensorRT-LLM's tensors, converted once and kept (LRU)."""
        lora = self._trtllm_loras.get(name)
        if lora is not None:
            self._trtllm_loras.move_to_end(name)
            return lora
        if self.adapters_dir is None:
            raise LoraFormatError(f"adapter {name!r}: this client has no adapters folder")
        if not _ADAPTER_NAME.match(name):
            raise LoraFormatError(f"invalid adapter name {name!r} (expected tenant/<16 hex digits>)")
        lora = await asyncio.to_thread(load_peft_adapter, self.adapters_dir / name, task_id=task_id_for(name))
        self._trtllm_loras[name] = lora
        while len(self._trtllm_loras) > self.max_cached_adapters:
            self._trtllm_loras.popitem(last=False)
        return lora

    async def _request_inputs(
        self, model: str, prompt: str, params: GenerationParams
    ) -> tuple[list[grpcclient.InferInput], tuple[str, int] | None]:
        """The request's tensors, and the (model, task id) whose LoRA weights they carry, if any."""
        if not (params.lora_name and model == params.lora_model):
            return generation_inputs(prompt, params, model=model), None
        kind = await self.lora_input(model)
        if kind == "name":
            return generation_inputs(prompt, params, model=model), None
        if kind == "none":
            raise TritonError(f"{model}: takes no LoRA adapter, asked for {params.lora_name!r}", before_output=True)
        try:
            lora = await self.trtllm_lora(params.lora_name)
        except (LoraFormatError, OSError) as exc:
            raise TritonError(f"{model}: adapter {params.lora_name!r}: {exc}", before_output=True) from None
        key = (model, lora.task_id)
        with_weights = key not in self._lora_uploaded
        inputs = generation_inputs(prompt, msgspec.structs.replace(params, lora_name=""), model=model)
        inputs += trtllm_lora_inputs(lora, with_weights=with_weights)
        return inputs, key if with_weights else None

    async def close(self) -> None:
        await self._client.close()

    async def is_ready(self, model: str | None = None) -> bool:
        try:
            if model is None:
                return bool(await self._client.is_server_ready())
            return bool(await self._client.is_model_ready(model))
        except Exception:  # unreachable server: not ready
            return False

    async def inference_statistics(self, model: str) -> tuple[int, int]:
        """``(inferences, executions)`` Triton has counted for ``model`` since it loaded: a batch of n requests
        is n inferences in one execution, so executions < inferences shows the dynamic batcher at work."""
        stats = await self._client.get_inference_statistics(model, as_json=True)
        entry = stats["model_stats"][0]
        return int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0))

    async def stream(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        *,
        request_id: str = "",
        stats: StreamStats | None = None,
    ) -> AsyncGenerator[str, None]:
        """:class:`~processors.generation.Generator`: the conversation in ``model``'s chat format
        (:func:`~processors.adapters.chat_formats.render_chat`), with its end-of-turn token as a stop word too."""
        info = model_info(model)
        stops = tuple(dict.fromkeys((*params.stop_words, *info.stop_words)))
        model_params = msgspec.structs.replace(params, stop_words=stops)
        prompt = render_chat(model, messages)
        stats = stats if stats is not None else StreamStats(model=model, started=time.monotonic())
        call = ModelCall(model, prompt=prompt, max_tokens=params.max_tokens, temperature=params.temperature,
                         top_p=params.top_p, server=self.url)  # fmt: skip
        pieces = self.generate(model, prompt, model_params, request_id=request_id, stats=stats)
        completed = False
        try:
            async for piece in pieces:
                call.on_token()
                yield piece
            completed = True
        except GenerationError as exc:
            call.end(error=exc, status=exc.status, prompt_tokens=stats.prompt_tokens)
            raise
        finally:
            await pieces.aclose()
            call.end(cancelled=not completed, prompt_tokens=stats.prompt_tokens)

    async def generate(
        self,
        model: str,
        prompt: str,
        params: GenerationParams,
        *,
        request_id: str = "",
        stats: StreamStats | None = None,
        timeout_s: float | None = None,
        first_token_timeout_s: float | None = None,
        retries: int | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield text pieces as the model produces them; ``prompt`` is already in the model's chat format.

        Raises :class:`TritonError` on failure. A failure before the first piece is retried (up to ``retries``
        times, transient errors only); nothing is retried once a piece has been yielded: the caller has already
        shown it, and a retry would repeat it. Closing or cancelling the iterator cancels the request in Triton.
        """
        stats = stats if stats is not None else StreamStats(model=model, started=time.monotonic())
        stats.model = model
        attempts = 1 + (self.retries if retries is None else retries)
        stall_s = timeout_s or self.timeout_s
        deadline = time.monotonic() + stall_s  # for the first token, retries included
        first_timeout = first_token_timeout_s or self.first_token_timeout_s
        pieces = retried_before_output(
            lambda: self._stream_once(model, prompt, params, request_id, stats, deadline, first_timeout, stall_s),
            stats,
            attempts=attempts,
            deadline=deadline,
            backoff_s=self.backoff_s,
        )
        try:
            async for piece in pieces:
                yield piece
        finally:
            await pieces.aclose()

    async def _stream_once(
        self,
        model: str,
        prompt: str,
        params: GenerationParams,
        request_id: str,
        stats: StreamStats,
        deadline: float,
        first_token_timeout_s: float | None,
        stall_s: float,
    ) -> AsyncGenerator[str, None]:
        inputs, uploading = await self._request_inputs(model, prompt, params)
        request = {"model_name": model, "inputs": inputs, "request_id": request_id}

        async def one_request() -> AsyncIterator[dict[str, Any]]:
            # Ending the request stream half-closes the call; Triton ends it after the model's final response.
            yield request

        end = time.monotonic() + self.max_stream_s
        # gRPC's own deadline is only a backstop, later than ``end``: the cap is enforced below, with its reason (a
        # deadline equal to the cap raced it and, on a busy loop, won with a bare DEADLINE_EXCEEDED).
        responses = self._client.stream_infer(one_request(), stream_timeout=self.max_stream_s + 5.0)
        iterator = responses.__aiter__()
        finished = False
        try:
            while True:
                wait, what = next_read_wait(
                    stats, deadline=deadline, first_token_timeout_s=first_token_timeout_s, stall_s=stall_s, end=end
                )
                try:
                    async with asyncio.timeout(wait):
                        result, error = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise TritonError(
                        f"{model}: {what}",
                        retryable=True,
                        before_output=stats.chunks == 0,
                        status="DEADLINE_EXCEEDED",
                    ) from None
                if error is not None:
                    failure = _classify(model, error, before_output=stats.chunks == 0)
                    if params.lora_name and _LORA_NOT_CACHED.search(str(failure)):
                        # Evicted from the engine's LoRA cache: the next attempt carries the weights again.
                        self._lora_uploaded.discard((model, task_id_for(params.lora_name)))
                        failure.retryable = failure.before_output
                    raise failure
                if uploading is not None:
                    self._lora_uploaded.add(uploading)  # the engine took the request, and with it the adapter
                    uploading = None
                counted = _prompt_tokens_of(result)
                if counted is not None:
                    stats.prompt_tokens = counted
                piece = _text_of(result)
                if piece:
                    if stats.first_token_at is None:
                        stats.first_token_at = time.monotonic()
                    stats.chunks += 1
                    yield piece
            finished = True
        except asyncio.CancelledError:
            stats.cancelled = True
            raise
        except Exception as exc:
            raise _classify(model, exc, before_output=stats.chunks == 0) from None
        finally:
            stats.finished_at = time.monotonic()
            if not finished:
                # Closed early (caller stopped, cancelled, or an error): cancel the call so the model stops.
                if not isinstance(sys.exc_info()[1], TritonError):
                    stats.cancelled = True
                responses.cancel()

    async def infer(
        self,
        model: str,
        inputs: Sequence[grpcclient.InferInput],
        outputs: Sequence[str],
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Plain request/response inference (embedder, reranker); transient failures are retried (idempotent)."""
        attempts = 1 + (self.retries if retries is None else retries)
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        for attempt in range(attempts):
            try:
                result = await self._client.infer(
                    model,
                    list(inputs),
                    outputs=[grpcclient.InferRequestedOutput(name) for name in outputs],
                    client_timeout=max(deadline - time.monotonic(), 0.001),
                )
                return {name: result.as_numpy(name) for name in outputs}
            except Exception as exc:
                error = _classify(model, exc, before_output=True)
                delay = self.backoff_s * (2**attempt)
                if not error.retryable or attempt + 1 >= attempts or deadline - time.monotonic() <= delay:
                    raise error from None
                await asyncio.sleep(delay)
        raise TritonError(f"{model}: no attempt made")  # attempts >= 1, so unreachable
