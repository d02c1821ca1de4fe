"""The chunk pipeline's branch-free arithmetic against the plain masked versions it replaced."""

from __future__ import annotations

import awkward as ak
import hist
import numpy as np
import pytest

from hepsieve.processors import processor as P
from hepsieve.processors.analyses import get_analysis
from hepsieve.processors.analysis import FeatureSpec
from hepsieve.processors.cutflow import Cutflow
from hepsieve.processors.errors import ConfigurationError

RNG = np.random.default_rng(3)
N = 5000


def _codes_with_none() -> np.ndarray:
    return RNG.integers(-1, 3, N)  # three categories and events in none (-1)


def test_counts_per_code_passing_a_cut_are_those_of_the_masked_events():
    codes, passed = _codes_with_none(), RNG.random(N) < 0.4
    got = P._code_counts(codes, 3, passed)
    assert np.array_equal(got, [np.count_nonzero((codes == c) & passed) for c in range(3)])
    assert np.array_equal(P._code_counts(codes, 3), [np.count_nonzero(codes == c) for c in range(3)])
    assert P._code_counts(None, 3, passed) is None


class _Sel:
    def __init__(self, codes):
        self.codes = codes


def _book() -> hist.Hist:
    return hist.Hist(
        hist.axis.StrCategory([], growth=True, name="dataset"),
        hist.axis.Integer(0, 3, underflow=False, name="category"),
        hist.axis.StrCategory(["nominal"], name="variation"),
        hist.axis.Regular(20, 0, 1),
        storage=hist.storage.Weight(),
    )


@pytest.mark.parametrize("none", [False, True], ids=["all-categorised", "some-in-none"])
def test_a_fill_after_a_cut_equals_the_fill_of_the_passing_events_to_the_bit(none):
    codes = _codes_with_none() if none else RNG.integers(0, 3, N)
    values, weights, passed = RNG.random(N) * 1.2, RNG.normal(1, 0.3, N), RNG.random(N) < 0.5
    got, want = _book(), _book()
    P._fill_coded(got, ("d", "nominal"), (0, 1, 2), _Sel(codes), (values,), weights, also=passed)
    keep = passed & (codes >= 0)
    want.fill("d", codes[keep], "nominal", values[keep], weight=weights[keep])
    assert np.array_equal(got.view(flow=True), want.view(flow=True))
    none_pass = _book()  # no event passes: no dataset bin, as a fill of no events
    nothing = np.zeros(N, dtype=bool)
    P._fill_coded(none_pass, ("d", "nominal"), (0, 1, 2), _Sel(codes), (values,), weights, also=nothing)
    assert list(none_pass.axes["dataset"]) == []


def _processor() -> P.AnalysisProcessor:
    return P.AnalysisProcessor(get_analysis("higgs-uci"), [], variations=[])


def test_category_codes_and_the_overlap_check():
    proc = _processor()
    a, b = RNG.random(N) < 0.3, RNG.random(N) < 0.3
    b &= ~a
    codes = proc._codes({"signal": a, "background": b}, N)
    assert np.array_equal(codes, np.select([a, b], [0, 1], -1))
    with pytest.raises(ConfigurationError, match="categories overlap"):
        proc._codes({"signal": a, "background": a | b}, N)


def test_cutflow_sums_are_those_of_the_masked_weights():
    w = RNG.normal(1, 0.5, N)
    mask = RNG.random(N) < 0.6
    cutflow = Cutflow("d", w)
    cutflow.add("cut", mask)
    step = cutflow.steps["cut"]
    assert step["n"] == np.count_nonzero(mask)
    assert step["sumw"] == pytest.approx(w[mask].sum(), rel=1e-12)
    assert step["sumw2"] == pytest.approx((w[mask] ** 2).sum(), rel=1e-12)


def test_all_finite_finds_nan_and_inf_and_keeps_huge_finite_values():
    cols = [RNG.random(N).astype(np.float32) for _ in range(3)]
    assert P._all_finite(cols, N).all()
    huge = np.full(N, np.finfo(np.float32).max, np.float32)  # its sum overflows to inf
    assert P._all_finite([*cols, huge], N).all()
    for bad in (np.nan, np.inf, -np.inf):
        col = cols[1].copy()
        col[[7, 4000]] = bad
        for others in ([cols[0]], [cols[0], huge]):
            finite = P._all_finite([*others, col], N)
            assert np.flatnonzero(~finite).tolist() == [7, 4000]


def test_feature_columns_of_flat_records_are_the_fields_of_the_events(monkeypatch):
    n = 1000
    jagged = ak.unflatten(np.ones(n), np.tile([0, 2], n // 2))
    events = ak.zip({"a": RNG.random(n), "b": RNG.integers(0, 9, n), "j": jagged}, depth_limit=1)
    longer = ak.contents.NumpyArray(RNG.random(n))  # a record may be shorter than its contents
    short = ak.Array(ak.contents.RecordArray([longer, longer], ["a", "b"], length=300))
    records = (events, events[100:300], short)
    want = [{f: ak.to_numpy(r[f]) for f in ("b", "a")} for r in records]
    spec = FeatureSpec(("b", "a"), lambda e: e, units=("", ""))
    with monkeypatch.context() as m:  # the plain fields are read without ak.to_numpy
        m.setattr(ak, "to_numpy", None)
        got = [spec.columns(r) for r in records]
    for g, w in zip(got, want, strict=True):
        assert list(g) == ["b", "a"] and all(np.array_equal(g[f], w[f]) for f in w)
    masked = events[RNG.random(n) < 0.5]  # indexed contents: ak.to_numpy, as before
    assert np.array_equal(spec.columns(masked)["a"], ak.to_numpy(masked.a))
    with pytest.raises(ValueError, match="not regular"):  # jagged: refused by ak.to_numpy
        FeatureSpec(("j",), lambda e: e, units=("",)).columns(events)
