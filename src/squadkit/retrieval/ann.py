"""Dense search at scale: an approximate nearest-neighbour (HNSW) index of the passage embeddings.

Placeholder replaced below.
"""


def write_for(conn, path, generation) -> str:
    return ""
