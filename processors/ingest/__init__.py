"""Document ingestion: loaders, chunkers, cached embeddings, and the Milvus index the query path searches."""
