"""`quijote train`'s wiring: the per-shard stages run in forked workers and give exactly what
one process gives; pairs streamed (`pairs=stream`) give exactly what pairs files give."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flows.train_stages
import tasks.pairs
import tasks.train
from flows.train_stages import forked, load_kernels, train_stages
from quijote.errors import QuijoteError
from quijote.params import Params
from storage.schemas import PAIRS
from storage.stages import Prepared, StageOutput, Stages, shards, stage_key
from storage.vectors import read_vectors
from tasks.subsample import HELDOUT_FILE, epoch_file
from tests.commands import assert_one_line_error, quijote
from tests.data import quijote_slice

PARAMS = Params.from_mapping({"dim": 8, "epochs": 2, "min_count": 2, "threads": 1, "device": "cpu"})


def three_documents(directory: Path) -> Path:
    words = quijote_slice(9_000).split()
    directory.mkdir()
    for i in range(3):
        part = " ".join(words[i * 3_000 : (i + 1) * 3_000])
        (directory / f"parte-{i}.txt").write_text(part + "\n", encoding="utf-8")
    return directory


def same_vectors(trained: StageOutput, other: StageOutput) -> bool:
    """Whether two train stages wrote the same words and bit-identical vectors."""
    words, vectors = read_vectors(trained.file("vectors.parquet"))
    other_words, other_vectors = read_vectors(other.file("vectors.parquet"))
    return words == other_words and np.array_equal(vectors, other_vectors)


def test_shards_in_workers_give_the_vectors_of_one_process(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = [str(three_documents(tmp_path / "corpus"))]
    pooled = train_stages(corpus, PARAMS, orchestrated=False)
    assert len(pooled.tokenize) == len(pooled.pairs) == 3

    monkeypatch.setenv("QUIJOTE_HOME", str(tmp_path / "serial"))
    monkeypatch.setattr(flows.train_stages.os, "cpu_count", lambda: 1)  # no workers
    serial = train_stages(corpus, PARAMS, orchestrated=False)

    assert [s.meta["pairs"] for s in pooled.pairs] == [s.meta["pairs"] for s in serial.pairs]
    assert same_vectors(pooled.train, serial.train)


def test_pairs_files_are_lz4_with_required_columns_and_read_in_sql(
    home: Path, tmp_path: Path
) -> None:
    corpus = [str(three_documents(tmp_path / "corpus"))]
    stages = train_stages(corpus, PARAMS.with_(epochs=1), orchestrated=False)
    for shard in stages.pairs:
        path = shard.file(epoch_file(0))
        metadata = pq.ParquetFile(path).metadata
        assert metadata.schema.to_arrow_schema() == PAIRS
        assert {metadata.schema.column(i).max_definition_level for i in range(2)} == {0}
        assert metadata.row_group(0).column(0).compression == "LZ4"
        counted = duckdb.execute("SELECT count(*) FROM read_parquet(?)", [str(path)]).fetchone()
        assert counted == (shard.meta["pairs"],)


def test_streamed_pairs_train_the_same_vectors_with_no_pairs_on_disk(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks.train, "BLOCK_ROWS", 1_000)  # several blocks a shard
    corpus = [str(three_documents(tmp_path / "corpus"))]
    files = train_stages(corpus, PARAMS, orchestrated=False)
    streamed = train_stages(corpus, PARAMS.with_(pairs="stream"), orchestrated=False)

    for written, counted in zip(files.pairs, streamed.pairs, strict=True):
        assert sorted(p.name for p in counted.path.iterdir()) == ["heldout.parquet", "stage.json"]
        assert counted.meta["pairs_per_epoch"] == written.meta["pairs_per_epoch"]
        assert counted.key != written.key
        default_key = stage_key(
            "pairs", tasks.pairs.VERSION, written.meta["params"], written.meta["inputs"]
        )
        assert written.key == default_key and "pairs" not in written.meta["params"]
    assert streamed.train.meta["loss_per_epoch"] == files.train.meta["loss_per_epoch"]
    assert same_vectors(files.train, streamed.train)


def test_drawn_blocks_are_the_files_blocks_from_any_row(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a resumed epoch reads: the same blocks, from any row, as the pairs files give."""
    monkeypatch.setattr(tasks.train, "BLOCK_ROWS", 1_000)
    corpus = [str(three_documents(tmp_path / "corpus"))]
    stages = train_stages(corpus, PARAMS, orchestrated=False)
    pairs, subsampled = stages.pairs, stages.subsample
    files = [shard.file("epoch-001.parquet") for shard in pairs]
    first_shard = pairs[0].meta["pairs_per_epoch"][1]
    for start in (0, 1, 999, 1_000, 2_500, first_shard, first_shard + 1_234):
        drawn = list(tasks.train.drawn_blocks(pairs, subsampled, PARAMS, 1, start))
        read = list(tasks.train.pair_blocks(files, start))
        assert [first for first, _ in drawn] == [first for first, _ in read]
        for (_, (c1, o1)), (_, (c2, o2)) in zip(drawn, read, strict=True):
            assert np.array_equal(c1, c2) and np.array_equal(o1, o2)


def test_regrouped_cuts_batches_into_blocks_of_rows() -> None:
    sizes = [3, 0, 7, 10, 1, 4]
    start = np.cumsum([0, *sizes])
    batches = [
        pa.record_batch([pa.array(np.arange(a, b, dtype=np.int32))] * 2, schema=PAIRS)
        for a, b in pairwise(start)
    ]
    blocks = list(tasks.train.regrouped(iter(batches), 4))
    assert [len(center) for center, _ in blocks] == [4, 4, 4, 4, 4, 4, 1]
    assert np.array_equal(np.concatenate([c for c, _ in blocks]), np.arange(25))
    assert list(tasks.train.regrouped(iter([]), 4)) == []


def test_stages_items_are_the_stages_that_ran_in_pipeline_order() -> None:
    def output(stage: str) -> StageOutput:
        return StageOutput(stage, "key", Path(stage))

    prepared = Prepared(
        output("download"), [output("tokenize")], output("vocab"), [output("subsample")],
        [output("pairs")],
    )  # fmt: skip
    assert pickle.loads(pickle.dumps(prepared)) == prepared  # `quijote train` forks `prepare`
    stages = Stages(**vars(prepared), negatives=output("negatives"), train=output("train"))
    trained = ["download", "tokenize", "vocab", "subsample", "pairs", "negatives", "train"]
    assert [name for name, _ in stages.items()] == trained
    classified = replace(stages, classify=output("classify"))
    assert [name for name, _ in classified.items()] == [*trained, "classify"]
    every = replace(classified, evaluate=output("evaluate"))
    assert [name for name, _ in every.items()] == [*trained, "evaluate", "classify"]
    assert all(shards(o)[0].stage == name for name, o in every.items())


def plain_stages(corpus: list[str], params: Params) -> dict[str, list[StageOutput]]:
    """The outputs of the stages from download to negatives (per stage, one per shard), run
    as plain calls in this process: no workers, no training."""
    from tasks.negatives import negatives_task

    def each(stage, *args) -> list[StageOutput]:
        return [stage(*row) for row in flows.train_stages.shard_rows(args)]

    prepared = flows.train_stages.prepare(
        corpus, params, flows.train_stages._plainly, each, None, None
    )
    outputs = {**vars(prepared), "negatives": negatives_task(prepared.vocab, params)}
    return {name: shards(output) for name, output in outputs.items()}


@pytest.mark.parametrize(
    ("change", "rebuilt"),
    [
        ({"heldout": 0.2}, ["subsample", "pairs"]),
        ({"seed": 2}, ["subsample", "pairs", "negatives"]),
        ({"sample": 1e-2}, ["subsample", "pairs"]),
        ({"subsample_rule": "paper"}, ["subsample", "pairs"]),
        ({"epochs": 1}, ["subsample", "pairs"]),
        ({"window": 2}, ["pairs"]),
        ({"negative": 3}, ["negatives"]),
        ({"min_count": 3}, ["vocab", "subsample", "pairs", "negatives"]),
        ({"dim": 4, "lr": 0.05, "batch_size": 64}, []),  # the train stage's alone
    ],
    ids=lambda value: "-".join(value) if isinstance(value, dict) else None,
)
def test_each_setting_changes_the_keys_of_the_stages_that_depend_on_it(
    home: Path, tmp_path: Path, change: dict[str, object], rebuilt: list[str]
) -> None:
    """A changed setting gives new keys to the stages it feeds and to those that read them,
    which are built again; every other stage is reused."""
    corpus = [str(three_documents(tmp_path / "corpus"))]
    before = plain_stages(corpus, PARAMS)
    after = plain_stages(corpus, PARAMS.with_(**change))
    keys = {name: [o.key for o in outputs] for name, outputs in before.items()}
    new_keys = [name for name, outputs in after.items() if [o.key for o in outputs] != keys[name]]
    built = [name for name, outputs in after.items() if not all(o.reused for o in outputs)]
    assert new_keys == built == rebuilt


def test_a_new_seed_gives_the_negatives_sampler_that_seed(home: Path, tmp_path: Path) -> None:
    """The sampler's seed is the one the negatives stage recorded: another seed must not reuse
    the output of the first."""
    from tasks.negatives import NegativeSampler

    corpus = [str(three_documents(tmp_path / "corpus"))]
    (first,) = plain_stages(corpus, PARAMS)["negatives"]
    (reseeded,) = plain_stages(corpus, PARAMS.with_(seed=7))["negatives"]
    assert not reseeded.reused and reseeded.key != first.key
    assert NegativeSampler.load(first).seed == PARAMS.seed
    assert NegativeSampler.load(reseeded).seed == 7


def test_a_reseeded_run_holds_out_the_same_pairs_with_the_same_negatives(
    home: Path, tmp_path: Path
) -> None:
    """The seed redraws the training data but not the held-out set, so the gate can compare
    the held-out loss of reseeded runs; another `negative` is another held-out set."""
    corpus = [str(three_documents(tmp_path / "corpus"))]
    params = PARAMS.with_(heldout=0.2)
    first_inputs = train_inputs(corpus, params)
    inputs = train_inputs(corpus, params.with_(seed=7))
    first, reseeded = (tasks.train.train_task(*i) for i in (first_inputs, inputs))
    _, first_pairs, _, _, first_subsampled = first_inputs
    _, pairs, _, _, subsampled = inputs
    olds = [*first_subsampled, *first_pairs]
    for old, new in zip(olds, [*subsampled, *pairs], strict=True):
        assert old.key != new.key
        assert pq.read_table(old.file(HELDOUT_FILE)) == pq.read_table(new.file(HELDOUT_FILE))
        assert pq.read_table(old.file(epoch_file(0))) != pq.read_table(new.file(epoch_file(0)))
    assert sum(len(pq.read_table(p.file(HELDOUT_FILE))) for p in pairs) > 100
    assert reseeded.meta["heldout_set"] == first.meta["heldout_set"]
    assert reseeded.meta["heldout_loss_per_epoch"] != first.meta["heldout_loss_per_epoch"]
    other_k = tasks.train.train_task(*train_inputs(corpus, params.with_(negative=3)))
    assert other_k.meta["heldout_set"] != first.meta["heldout_set"]


def test_every_epoch_is_a_fresh_subsampling_draw(home: Path, tmp_path: Path) -> None:
    """Each epoch's file subsamples the shard's sentences anew."""
    corpus = [str(three_documents(tmp_path / "corpus"))]
    for shard in plain_stages(corpus, PARAMS.with_(epochs=3))["subsample"]:
        epochs = [pq.read_table(shard.file(epoch_file(e)))["ids"].to_pylist() for e in range(3)]
        assert all(epochs)
        assert all(ids != other for ids, other in pairwise(epochs))
        assert len(set(shard.meta["kept_words_per_epoch"])) > 1


def train_inputs(corpus: list[str], params: Params) -> tuple:
    """The train stage's arguments (vocab, pairs, negatives, params, subsampled), the stages
    before it run as plain calls."""
    upstream = plain_stages(corpus, params)
    (vocab,), (negatives,) = upstream["vocab"], upstream["negatives"]
    return vocab, upstream["pairs"], negatives, params, upstream["subsample"]


def test_dim_lr_and_batch_size_each_alone_give_the_train_stage_a_new_key(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Vectors trained with other settings are never reused: each train setting is in the
    train stage's key (read from the `run_stage` call, nothing trained)."""
    keys: list[str] = []

    def keyed(stage: str, version: int, settings: dict, inputs: list[str], build) -> StageOutput:
        keys.append(stage_key(stage, version, settings, inputs))
        return StageOutput(stage, keys[-1], tmp_path / "unbuilt")

    monkeypatch.setattr(tasks.train, "run_stage", keyed)
    corpus = [str(three_documents(tmp_path / "corpus"))]
    vocab, pairs, negatives, _, subsampled = train_inputs(corpus, PARAMS)
    for change in ({}, {"dim": 4}, {"lr": 0.05}, {"batch_size": 64}, {}):
        tasks.train.train_task(vocab, pairs, negatives, PARAMS.with_(**change), subsampled)
    assert len(set(keys)) == 4 and keys[0] == keys[-1]


def test_the_learning_rate_decays_over_the_pairs_of_all_epochs(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer's linear decay runs over every epoch's pairs, not the first epoch's."""
    given: dict[str, int] = {}
    train_sgns = tasks.train.train_sgns

    def recorded(trainer, epochs, n_epochs: int, total_pairs: int, *args, **kwargs):
        given.update(trainer=trainer.total, progress=total_pairs)
        return train_sgns(trainer, epochs, n_epochs, total_pairs, *args, **kwargs)

    monkeypatch.setattr(tasks.train, "train_sgns", recorded)
    corpus = [str(three_documents(tmp_path / "corpus"))]
    inputs = train_inputs(corpus, PARAMS.with_(epochs=3))
    trained = tasks.train.train_task(*inputs)
    pairs = trained.meta["pairs"]
    first_epoch = sum(shard.meta["pairs_per_epoch"][0] for shard in inputs[1])
    assert pairs > 2 * first_epoch
    assert given == {"trainer": pairs, "progress": pairs}


def test_checkpoint_seconds_0_checkpoints_after_every_block(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one epoch there is no epoch-end checkpoint: every save is one by time, and with
    checkpoint_seconds=0 there is one after each block of pairs."""
    monkeypatch.setattr(tasks.train, "BLOCK_ROWS", 1_000)
    saved: list[dict] = []
    save = tasks.train.Checkpoint.save

    def recorded(self, position: dict, arrays: dict) -> None:
        saved.append(position)
        save(self, position, arrays)

    monkeypatch.setattr(tasks.train.Checkpoint, "save", recorded)
    corpus = [str(three_documents(tmp_path / "corpus"))]
    inputs = train_inputs(corpus, PARAMS.with_(epochs=1, checkpoint_seconds=0))
    files = [shard.file(epoch_file(0)) for shard in inputs[1]]
    ends = [first + len(center) for first, (center, _) in tasks.train.pair_blocks(files)]
    assert len(ends) > 3
    trained = tasks.train.train_task(*inputs)
    assert [(p["epoch"], p["first"]) for p in saved] == [(0, end) for end in ends]
    assert ends[-1] == trained.meta["pairs"]
    assert not list(home.glob("stages/train/.checkpoint-*"))


def test_a_quijote_error_in_the_forked_preparation_is_one_line(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The child prints no traceback for a QuijoteError (the parent raises it, the CLI shows
    its one line); an unexpected error's traceback it prints, and the parent raises it too."""

    def refused() -> None:
        raise QuijoteError("no corpus 'nada'")

    with pytest.raises(QuijoteError, match=r"^no corpus 'nada'$"):
        forked(refused)()
    assert capfd.readouterr().err == ""

    def broken() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        forked(broken)()
    assert "Traceback" in capfd.readouterr().err


def test_quijote_train_shows_the_preparations_error_in_one_line(home: Path, tmp_path: Path) -> None:
    """The vocab stage, in the forked child, refuses a corpus without a word min_count times."""
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("uno dos tres uno dos\n", encoding="utf-8")
    args = ["train", "--corpus", str(corpus), "--min-count", "50", "--out", str(tmp_path / "v")]
    assert_one_line_error(quijote(home, *args), "the vocabulary is empty: no word occurs 50 ")


def test_a_killed_preparation_is_a_clean_error(capfd: pytest.CaptureFixture[str]) -> None:
    """A child killed before it sends a result (the parent reads the end of the pipe) is one
    QuijoteError, not an EOFError from unpickling."""

    def killed() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(QuijoteError, match=r"^data preparation stopped \(killed\?\)$"):
        forked(killed)()
    assert capfd.readouterr().err == ""


def test_scipy_blas_imports_after_the_kernels_are_loaded() -> None:
    """load_kernels hides SciPy's BLAS from numba's set-up only while it loads: afterwards it
    imports and works, and numba compiles np.dot with it (a fresh process: not yet imported)."""
    script = (
        "import sys\n"
        "from flows.train_stages import load_kernels\n"
        "load_kernels()\n"
        "assert 'scipy.linalg.cython_blas' not in sys.modules\n"
        "import numba, numpy as np, scipy.linalg.cython_blas\n"
        "from scipy.linalg import blas\n"
        "assert blas.ddot(np.ones(3), np.ones(3)) == 3.0\n"
        "assert numba.njit(lambda a, b: np.dot(a, b))(np.ones(3), np.ones(3)) == 3.0\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_loading_the_kernels_keeps_an_imported_scipy_blas() -> None:
    import scipy.linalg.cython_blas as blas

    load_kernels()
    assert sys.modules["scipy.linalg.cython_blas"] is blas
