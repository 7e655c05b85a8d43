"""Milvus Lite in server mode: a collection with dense + BM25 fields round-trips and hybrid search works."""

from __future__ import annotations

import numpy as np
from pymilvus import AnnSearchRequest, DataType, Function, FunctionType, MilvusClient, RRFRanker

from infra.settings import Settings
from infra.stack import Stack
from processors.adapters.milvus import GRPC_OPTIONS


def test_collection_round_trip_with_hybrid_search(stack: Stack, stack_settings: Settings) -> None:
    client = MilvusClient(uri=stack_settings.milvus_address, grpc_options=GRPC_OPTIONS)
    name = "roundtrip"
    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("tenant", DataType.VARCHAR, max_length=64)
    schema.add_field("text", DataType.VARCHAR, max_length=2048, enable_analyzer=True)
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=8)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name="bm25", function_type=FunctionType.BM25, input_field_names=["text"], output_field_names=["sparse"]
        )
    )
    index = client.prepare_index_params()
    index.add_index("dense", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 64})
    index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    client.create_collection(name, schema=schema, index_params=index)

    rng = np.random.default_rng(0)
    texts = ["kafka streams events", "milvus stores vectors", "redis caches answers", "triton serves models"]
    rows = [
        {"id": f"d{i}", "tenant": "a" if i < 3 else "b", "text": t, "dense": rng.normal(size=8).tolist()}
        for i, t in enumerate(texts)
    ]
    assert client.insert(name, rows)["insert_count"] == 4

    got = client.get(name, ids=["d1"], output_fields=["text", "tenant"])
    assert got[0]["text"] == "milvus stores vectors"

    # Filters belong on each sub-request: a top-level filter on hybrid_search is not applied by Milvus Lite.
    tenant_a = 'tenant == "a"'
    dense = AnnSearchRequest([rows[1]["dense"]], "dense", {"metric_type": "COSINE"}, limit=3, expr=tenant_a)
    sparse = AnnSearchRequest(["vectors"], "sparse", {"metric_type": "BM25"}, limit=3, expr=tenant_a)
    hits = client.hybrid_search(name, [dense, sparse], RRFRanker(60), limit=3, output_fields=["text", "tenant"])[0]
    assert hits[0]["id"] == "d1"
    assert all(hit["entity"]["tenant"] == "a" for hit in hits)

    client.delete(name, filter='tenant == "b"')
    assert client.query(name, filter='tenant == "b"', output_fields=["id"]) == []
    client.drop_collection(name)
    client.close()
