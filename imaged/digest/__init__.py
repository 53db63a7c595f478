"""Content addressing: ignore rules, the one file walker, per-file digests, tree indexes, image digests. Reads local files, never the network."""
