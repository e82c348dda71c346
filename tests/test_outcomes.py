import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SHARED_DATA, make_outcomes

from banditroute.offline.outcomes import OutcomeTableError, load_outcomes


def test_load_pivots_and_references(outcomes_path):
    o = load_outcomes(outcomes_path)
    assert o.models == ["big", "coder", "mathy", "tiny"]
    assert o.quality.shape == o.cost.shape == (300, 4)
    assert set(o.splits) == {"train", "test"}
    ref = o.subset("test").reference()
    assert ref["oracle_quality"] >= ref["best_quality"]


def _write(tmp_path, table):
    p = tmp_path / "t.parquet"
    pq.write_table(table, p)
    return p


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.drop_columns(["cost_usd"]), "missing columns cost_usd"),
        (lambda t: t.set_column(3, "quality", pa.array([1.5] * t.num_rows)), "quality must be in"),
        (lambda t: t.set_column(3, "quality", pa.array([float("nan")] * t.num_rows)), "quality must be in"),
        (lambda t: t.set_column(4, "cost_usd", pa.array([-1.0] * t.num_rows)), "cost_usd must be"),
        (lambda t: t.set_column(6, "split", pa.array(["dev"] * t.num_rows)), "split must be"),
        (lambda t: t.slice(1), "not full information"),
        (lambda t: t.slice(0, 0), "no rows"),
        (lambda t: pa.concat_tables([t, t.slice(0, 1)]), "duplicate"),
        (lambda t: t.set_column(3, "quality", pa.array(["good"] * t.num_rows)), "must be numeric"),
    ],
)
def test_malformed_tables_are_rejected(tmp_path, mutate, message):
    with pytest.raises(OutcomeTableError, match=message):
        load_outcomes(_write(tmp_path, mutate(make_outcomes(20))))


def test_unreadable(tmp_path):
    with pytest.raises(OutcomeTableError, match="does not exist"):
        load_outcomes(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"garbage")
    with pytest.raises(OutcomeTableError, match="cannot read"):
        load_outcomes(bad)


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data not present")
def test_routerbench_reference_figures():
    ref = load_outcomes(SHARED_DATA / "routerbench_subset.parquet").subset("test").reference()
    assert ref["best_model"] == "gpt-4-1106-preview"
    assert ref["best_quality"] == pytest.approx(0.880, abs=5e-4)
    assert ref["oracle_quality"] == pytest.approx(0.976, abs=5e-4)
