"""The cell index: spherical k-means cells that an approximate cosine search reads."""

import numpy as np

from storage.cells import _recentred, build_cells, cell_count
from storage.vectors import unit_rows


def clustered(words: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    return clusters_and_members(words, dim, clusters, seed)[0]


def clusters_and_members(
    words: int, dim: int, clusters: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors around `clusters` random centres, and each one's centre."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    members = rng.integers(0, clusters, words)
    noise = 0.3 * rng.standard_normal((words, dim))
    return (centres[members] + noise).astype(np.float32), members


def test_every_word_is_in_the_cell_of_its_nearest_centroid():
    vectors = clustered(3000, 12, 20)
    cells = build_cells(vectors)
    assert cells.centroids.shape == (cell_count(3000), 12) == (3, 12)
    assert np.allclose(np.linalg.norm(cells.centroids, axis=1), 1, atol=1e-5)
    similarities = unit_rows(vectors) @ cells.centroids.T
    assert np.array_equal(cells.cell, similarities.argmax(1))
    assert cells.cell.dtype == np.int32


def test_the_same_vectors_and_seed_give_the_same_cells():
    vectors = clustered(5000, 8, 40)
    first, again = build_cells(vectors, cells=16), build_cells(vectors, cells=16)
    assert np.array_equal(first.cell, again.cell)
    assert np.array_equal(first.centroids, again.centroids)
    assert not np.array_equal(build_cells(vectors, cells=16, seed=1).cell, first.cell)


def test_cells_follow_the_clusters():
    """Tight, separated clusters: k-means with as many cells keeps most clusters whole."""
    vectors, truth = clusters_and_members(4000, 16, 8, seed=3)
    cells = build_cells(vectors, cells=8).cell
    whole = [np.bincount(cells[truth == c]).max() / (truth == c).sum() for c in range(8)]
    assert np.median(whole) > 0.95


def test_more_cells_asked_than_words_gives_one_per_word():
    vectors = clustered(5, 4, 2)
    cells = build_cells(vectors, cells=10)
    assert len(cells.centroids) == 5 and len(cells.cell) == 5
    assert cell_count(0) == 1 and cell_count(1024) == 1 and cell_count(1025) == 2


def test_an_empty_cell_keeps_its_centroid_in_the_middle_or_last():
    """Cells 1 and 3 have no members: they keep their centroids (not a neighbour's vector, and
    the last one does not run past the members); the others move to their members' mean."""
    units = unit_rows(np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    centroids = unit_rows(np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]))
    moved = _recentred(units, np.array([0, 0, 2]), centroids)
    expected = np.array([[1, 1] / np.sqrt(2), centroids[1], [-1, 0], centroids[3]])
    assert np.allclose(moved, expected)
    middle = _recentred(units, np.array([0, 0, 2]), centroids[:3])
    assert np.allclose(middle, expected[:3])


def test_duplicate_vectors_leave_cells_empty_without_harm():
    """Two distinct directions asked for four cells: two cells stay empty through k-means."""
    vectors = np.array([[1, 0, 0]] * 3 + [[0, 1, 0]] * 3, dtype=np.float32)
    for seed in range(4):
        cells = build_cells(vectors, cells=4, seed=seed)
        assert len(cells.centroids) == 4 and len(np.unique(cells.cell)) == 2
        similarities = unit_rows(vectors) @ cells.centroids.T
        assert np.array_equal(cells.cell, similarities.argmax(1))
