"""The leaves of the deployment tree (ARCHITECTURE.md), named by their technique path."""

BASELINE_LEAF = "ptq"
LEAVES: tuple[str, ...] = (
    "ptq", "qat",
    "prune>ptq", "prune>pqat",
    "cluster>ptq", "cluster>cqat",
    "prune>cluster>ptq", "prune>cluster>pcqat",
)
# Progressive mode evaluates one level and goes deeper only if no leaf met the thresholds yet.
LEAF_LEVELS: dict[str, int] = {
    "ptq": 1, "qat": 1,
    "prune>ptq": 2, "prune>pqat": 2, "cluster>ptq": 2, "cluster>cqat": 2,
    "prune>cluster>ptq": 3, "prune>cluster>pcqat": 3,
}


def leaf_key(path: str) -> str:
    """An identifier for a leaf (component ids, input keys): 'prune>cluster>pcqat' -> 'prune_cluster_pcqat'."""
    return path.replace(">", "_")
