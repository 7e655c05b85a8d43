"""The one async Triton client every stage uses (gRPC, ``tritonclient.grpc.aio``).

Generation speaks the TensorRT-LLM ensemble contract in :mod:`schemas.triton`, so the same code streams from the
CPU models in ``triton_models/cpu`` and from TensorRT-LLM engines in production. Closing or cancelling the
iterator cancels the request inside Triton (the model sees ``request.is_cancelled()``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import msgspec
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from schemas.triton import GENERATION_INPUTS

_SPECS = {spec.name: spec for spec in GENERATION_INPUTS}


class TritonError(RuntimeError):
    """Triton failed or could not be reached. ``retryable`` says whether the same call may succeed later."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class GenerationParams(msgspec.Struct, frozen=True, kw_only=True):
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop_words: tuple[str, ...] = ()
    seed: int | None = None


class StreamStats(msgspec.Struct, kw_only=True):
    """Filled in while a stream runs; read it after (or during) iteration."""

    model: str
    started: float
    first_token_at: float | None = None
    finished_at: float | None = None
    chunks: int = 0
    cancelled: bool = False

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def chunks_per_s(self) -> float | None:
        if self.first_token_at is None or self.finished_at is None or self.chunks < 2:
            return None
        elapsed = self.finished_at - self.first_token_at
        return (self.chunks - 1) / elapsed if elapsed > 0 else None


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
    tensor = grpcclient.InferInput(name, list(array.shape), spec.client_dtype)
    tensor.set_data_from_numpy(array)
    return tensor


def generation_inputs(prompt: str, params: GenerationParams, *, stream: bool = True) -> list[grpcclient.InferInput]:
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
    return inputs


def _text_of(result: Any) -> str:
    array = result.as_numpy("text_output")
    if array is None:
        return ""
    return "".join(item.decode("utf-8", errors="replace") for item in array.reshape(-1))


class TritonClient:
    """A long-lived connection to one Triton server. Create once per process; safe for concurrent use."""

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(url=url)

    async def close(self) -> None:
        await self._client.close()

    async def is_ready(self, model: str | None = None) -> bool:
        try:
            if model is None:
                return bool(await self._client.is_server_ready())
            return bool(await self._client.is_model_ready(model))
        except InferenceServerException:
            return False

    async def generate(
        self,
        model: str,
        prompt: str,
        params: GenerationParams,
        *,
        request_id: str = "",
        stats: StreamStats | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield text pieces as the model produces them.

        Raises :class:`TritonError` on failure. Nothing is retried once a token has been yielded: the caller has
        already shown it, and a retry would repeat it.
        """
        stats = stats or StreamStats(model=model, started=time.monotonic())
        request = {
            "model_name": model,
            "inputs": generation_inputs(prompt, params),
            "request_id": request_id,
        }

        async def one_request() -> AsyncIterator[dict[str, Any]]:
            # Ending the request stream half-closes the call; Triton ends it after the model's final response.
            yield request

        responses = self._client.stream_infer(one_request(), stream_timeout=self.timeout_s)
        finished = False
        try:
            async for result, error in responses:
                if error is not None:
                    raise TritonError(f"{model}: {error.message()}", retryable=stats.chunks == 0)
                piece = _text_of(result)
                if piece:
                    if stats.first_token_at is None:
                        stats.first_token_at = time.monotonic()
                    stats.chunks += 1
                    yield piece
            finished = True
        except InferenceServerException as exc:
            raise TritonError(f"{model}: {exc.message()}", retryable=stats.chunks == 0) from None
        except asyncio.CancelledError:
            stats.cancelled = True
            raise
        except Exception as exc:  # grpc.aio errors surface as AioRpcError (an Exception)
            if isinstance(exc, TritonError):
                raise
            raise TritonError(f"{model}: {type(exc).__name__}: {exc}", retryable=stats.chunks == 0) from None
        finally:
            stats.finished_at = time.monotonic()
            if not finished:
                stats.cancelled = True
                responses.cancel()

    async def infer(
        self, model: str, inputs: Sequence[grpcclient.InferInput], outputs: Sequence[str]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Plain request/response inference (embedder, reranker)."""
        try:
            result = await self._client.infer(
                model,
                list(inputs),
                outputs=[grpcclient.InferRequestedOutput(name) for name in outputs],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise TritonError(f"{model}: {exc.message()}", retryable=True) from None
        return {name: result.as_numpy(name) for name in outputs}
