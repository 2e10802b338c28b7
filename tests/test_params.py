import pytest

from quijote.errors import QuijoteError
from quijote.params import Params


def test_defaults_follow_word2vec() -> None:
    p = Params()
    assert (p.dim, p.window, p.negative, p.min_count, p.sample, p.epochs) == (
        100, 5, 5, 5, 1e-3, 5,
    )  # fmt: skip


def test_strings_from_the_command_line_are_converted() -> None:
    p = Params.from_mapping({"dim": "50", "sample": "1e-4", "device": "cpu"})
    assert (p.dim, p.sample, p.device) == (50, 1e-4, "cpu")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"window": 0}, "invalid window=0"),
        ({"dim": "0"}, "invalid dim=0"),
        ({"negative": 0}, "invalid negative=0"),
        ({"sample": 0}, "invalid sample=0.0"),
        ({"sample": "-1"}, "invalid sample=-1.0"),
        ({"dim": "ten"}, "invalid dim='ten'"),
        ({"dim": True}, "invalid dim=True"),
        ({"device": "tpu"}, "invalid device='tpu'"),
        ({"dimension": 3}, "unknown option 'dimension'"),
    ],
)
def test_bad_values_are_rejected_with_one_line(values: dict, message: str) -> None:
    with pytest.raises(QuijoteError, match=message) as error:
        Params.from_mapping(values)
    assert "\n" not in str(error.value)


def test_subset_is_what_a_stage_key_sees() -> None:
    assert Params().subset("window", "seed") == {"window": 5, "seed": 1}


# Each rule at its boundary: the valid values nearest it, and the invalid ones.
BOUNDARIES: dict[str, tuple[list, list]] = {
    "dim": ([1], [0, -1]),
    "window": ([1], [0]),
    "negative": ([1], [0]),
    "min_count": ([1], [0]),
    "max_vocab": ([0], [-1]),
    "sample": ([1e-9], [0.0, -1e-9]),
    "subsample_rule": (["word2vec", "paper"], ["Word2vec", ""]),
    "epochs": ([1], [0]),
    "heldout": ([0.0, 0.49], [0.5, 0.75, 1.0, -0.01]),
    "lr": ([1e-9], [0.0, -0.025]),
    "batch_size": ([1], [0]),
    "seed": ([0], [-1]),
    "device": (["auto", "cpu", "cuda", "torch"], ["gpu", ""]),
    "threads": ([0], [-1]),
    "checkpoint_seconds": ([0.0], [-0.5]),
    "restrict_vocab": ([0], [-1]),
    "pairs": (["files", "stream"], ["memory"]),
}


def test_every_rule_has_its_boundaries() -> None:
    assert set(BOUNDARIES) == set(Params().checks()) == set(Params.RULES)


@pytest.mark.parametrize(
    ("name", "value"), [(name, v) for name, (valid, _) in BOUNDARIES.items() for v in valid]
)
def test_the_valid_value_nearest_each_boundary_is_accepted(name: str, value: object) -> None:
    assert getattr(Params.from_mapping({name: value}), name) == value


@pytest.mark.parametrize(
    ("name", "value"), [(name, v) for name, (_, invalid) in BOUNDARIES.items() for v in invalid]
)
def test_the_invalid_value_nearest_each_boundary_is_rejected(name: str, value: object) -> None:
    with pytest.raises(QuijoteError, match=f"^invalid {name}=") as error:
        Params.from_mapping({name: value})
    assert str(error.value) == f"invalid {name}={value!r}: {Params.RULES[name]}"
