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
