"""Quality you can see: the full Quijote with the default parameters (the issue's criterion;
gensim with the same settings passes it too). About half a minute of training."""

import numpy as np
import pytest

from flows.train_stages import train_stages
from quijote.params import Params
from storage.vectors import read_vectors

EXPECTED = {"dulcinea": "toboso", "rocinante": "rucio", "caballero": "andante"}


@pytest.mark.usefixtures("home")
def test_default_training_on_the_quijote_finds_the_famous_pairs() -> None:
    stages = train_stages(["quijote"], Params(device="cpu"), orchestrated=False)
    words, vectors = read_vectors(stages.train.file("vectors.parquet"))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    index = {word: i for i, word in enumerate(words)}
    for word, neighbour in EXPECTED.items():
        similarity = unit @ unit[index[word]]
        top = [words[i] for i in np.argsort(-similarity)[1:11]]
        assert neighbour in top, (word, top)
