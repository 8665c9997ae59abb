"""Online half of gr2: the KServe re-ranker, the Triton backend and the exports (imports gr2, never the reverse)."""
