"""How big should the ingest batches be? Measures the two batched calls on a running stack.

- Triton ``embedder`` throughput (texts/s) by batch size, on real chunks of the Python docs, with 1 and 2 requests
  in flight (the embed micro-batcher allows 2 flushes at once).
- Milvus Lite upsert throughput (rows/s) by batch size, 384-d rows with text for BM25.

Run against a stack started with ``ragstream up`` (settings from ``RAGSTREAM_*``)::

    python benchmarks/ingest/bench_batching.py --out benchmarks/results/ingest
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from infra.settings import Settings
from processors.adapters.embedder import TritonEmbedder
from processors.adapters.triton import TritonClient
from processors.ingest.chunking import token_chunker
from processors.ingest.loaders import load_html
from processors.reporting.machine import describe_machine, machine_info

PYDOCS = Path("/usr/share/doc/python3.11/html")


def sample_chunks(count: int) -> list[str]:
    chunker = token_chunker()
    texts: list[str] = []
    for page in sorted((PYDOCS / "library").glob("*.html")):
        doc = load_html(page.read_text())
        texts.extend(doc.text[s.start : s.end] for s in chunker.split(doc))
        if len(texts) >= count:
            break
    return texts[:count]


async def embed_rates(settings: Settings, texts: list[str], sizes: list[int]) -> list[dict[str, float]]:
    client = TritonClient(settings.triton_address, timeout_s=120)
    rows = []
    try:
        await TritonEmbedder(client).embed(texts[:8])  # warm up
        for size in sizes:
            for in_flight in (1, 2):
                embedder = TritonEmbedder(client, max_batch=size)
                batches = [texts[i : i + size] for i in range(0, len(texts), size)]
                started = time.perf_counter()
                queue = list(batches)

                async def lane(work: list[list[str]], embedder: TritonEmbedder = embedder) -> None:
                    while work:
                        await embedder.embed(work.pop())

                await asyncio.gather(*(lane(queue) for _ in range(in_flight)))
                seconds = time.perf_counter() - started
                rows.append({"batch": size, "in_flight": in_flight, "texts_per_s": len(texts) / seconds})
                print(f"embed batch={size:<4} in_flight={in_flight} {len(texts) / seconds:7.1f} texts/s", flush=True)
    finally:
        await client.close()
    return rows


async def upsert_rates(
    settings: Settings, texts: list[str], sizes: list[int], rows_per_size: int
) -> list[dict[str, float]]:
    import redis.asyncio as aioredis

    from processors.adapters.doc_states import DocStates
    from processors.adapters.milvus import MilvusIndex, milvus_client

    redis = aioredis.Redis.from_url(settings.redis_address)
    client = milvus_client(settings.milvus_address)
    index = MilvusIndex(client, settings.milvus_address, DocStates(redis), collection="bench_batching_chunks")
    rng = np.random.default_rng(0)
    results = []
    try:
        await index.ensure_collection()
        for size in sizes:
            rows = []
            for i in range(rows_per_size):
                vector = rng.normal(size=384).astype(np.float32)
                rows.append({
                    "chunk_id": f"{size}-{i}", "tenant": "bench", "doc_id": f"doc{i // 40}", "version": 1,
                    "chunk_index": i, "text": texts[i % len(texts)], "source": "file:///x", "title": "t",
                    "metadata": {"heading_path": ["a", "b"]}, "dense": (vector / np.linalg.norm(vector)).tolist(),
                })  # fmt: skip
            started = time.perf_counter()
            for start in range(0, len(rows), size):
                await index.upsert(rows[start : start + size])
            seconds = time.perf_counter() - started
            results.append({"batch": size, "rows_per_s": len(rows) / seconds})
            print(f"upsert batch={size:<4} {len(rows) / seconds:7.1f} rows/s", flush=True)
    finally:
        await client.drop_collection("bench_batching_chunks")
        await client.close()
        await redis.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ingest"))
    args = parser.parse_args()
    settings = Settings.from_env()
    texts = sample_chunks(args.texts)
    embed = asyncio.run(embed_rates(settings, texts, [8, 16, 32, 64]))
    upsert = asyncio.run(upsert_rates(settings, texts, [16, 64, 256, 512], args.rows))
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "texts": len(texts),
        "embed": embed,
        "upsert": upsert,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batching.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Ingest batch sizes ({result['date']}, {describe_machine(result['machine'])})", ""]
    lines += ["| embed batch | in flight | texts/s |", "|---|---|---|"]
    lines += [f"| {r['batch']} | {r['in_flight']} | {r['texts_per_s']:.1f} |" for r in embed]
    lines += ["", "| upsert batch | rows/s |", "|---|---|"]
    lines += [f"| {r['batch']} | {r['rows_per_s']:.0f} |" for r in upsert]
    (args.out / "batching.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
