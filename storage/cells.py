"""An inverted-file index for cosine search: the vectors split into cells by spherical k-means,
so that a query compares itself with the cells' centroids first and then only with the words
of its nearest cells. The warehouse stores the cells in plain tables (any DuckDB connection
can search them, no extension needed); this module computes them with numpy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from storage.vectors import unit_rows

WORDS_PER_CELL = 1024  # about one DuckDB vector (2,048 rows) per cell or two
ITERATIONS = 8
TRAINING_WORDS_PER_CELL = 64  # k-means learns the centroids from a sample this big per cell
BLOCK = 16_384  # rows compared with every centroid at once (BLOCK x cells floats)


@dataclass(frozen=True)
class Cells:
    """`centroids` (cells x dim, unit length) and each word's `cell` (int32, in word order)."""

    centroids: np.ndarray
    cell: np.ndarray


def cell_count(words: int) -> int:
    """How many cells `words` vectors get: about WORDS_PER_CELL each, at least one."""
    return max(1, math.ceil(words / WORDS_PER_CELL))


def build_cells(vectors: np.ndarray, cells: int | None = None, seed: int = 0) -> Cells:
    """Spherical k-means (cosine): centroids learnt from a seeded sample, then every vector
    assigned to its nearest centroid. The same vectors and seed give the same cells."""
    units = unit_rows(vectors)
    count = min(cells or cell_count(len(units)), len(units))
    rng = np.random.default_rng(seed)
    sample_size = min(len(units), count * TRAINING_WORDS_PER_CELL)
    sample = units[np.sort(rng.choice(len(units), sample_size, replace=False))]
    centroids = sample[rng.choice(len(sample), count, replace=False)]
    for _ in range(ITERATIONS):
        centroids = _recentred(sample, nearest(sample, centroids), centroids)
    return Cells(centroids=centroids, cell=nearest(units, centroids))


def nearest(units: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each row's nearest centroid by cosine (both unit length), in blocks of BLOCK rows."""
    cell = np.empty(len(units), dtype=np.int32)
    for start in range(0, len(units), BLOCK):
        cell[start : start + BLOCK] = np.argmax(units[start : start + BLOCK] @ centroids.T, 1)
    return cell


def _recentred(units: np.ndarray, cell: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each centroid moved to the normalised mean of its members; an empty cell keeps its own."""
    counts = np.bincount(cell, minlength=len(centroids))
    starts = np.cumsum(counts) - counts
    filled = counts > 0
    sums = centroids.copy()
    sums[filled] = np.add.reduceat(units[np.argsort(cell, kind="stable")], starts[filled], axis=0)
    return unit_rows(sums)
