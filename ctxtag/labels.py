"""The contextual tags: their names and order, the one source of truth.

Every table, array and report in ctxtag orders contexts as `LABELS` does,
which is the order of the paper's public CSV files.
"""

LABELS = (
    "car",
    "gym",
    "happy",
    "night",
    "relax",
    "running",
    "sad",
    "summer",
    "work",
    "workout",
)
NUM_LABELS = len(LABELS)
LABEL_INDEX = {name: index for index, name in enumerate(LABELS)}

# Shares of each context among the paper's test pairs (docs/paper.md); the
# simulator calibrates its world to them.
PAPER_TEST_SHARES = (
    0.085, 0.113, 0.065, 0.094, 0.122, 0.109, 0.092, 0.156, 0.085, 0.079,
)

# Width of the user embeddings of the public release.
USER_EMBEDDING_DIM = 256
