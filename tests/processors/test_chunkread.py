"""The flat read of base-schema chunks: coffea's results, fresh handles for rewritten files."""

from __future__ import annotations

import json
import pickle
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
import uproot

from hepsieve.processors import RunConfig, chunkread, executors, run
from hepsieve.processors.errors import ChunkReadError


def _histograms(out) -> dict:
    with (out / "histograms.pkl").open("rb") as fin:
        hists = pickle.load(fin)
    return {k: np.asarray(h.view(flow=True)["value"]).copy() for k, h in hists.items()}


def _cutflow(out) -> dict:
    return json.loads((out / "cutflow.json").read_text())


def _both_ways(analysis, data, tmp_path, monkeypatch, **kw):
    """Run ``analysis`` on ``data`` by the flat read and by coffea's NanoEvents; return both outs."""
    reads, read_flat = [], chunkread.read_flat
    monkeypatch.setattr(chunkread, "read_flat", lambda *a: reads.append(a[0]) or read_flat(*a))
    flat, coffea = tmp_path / "flat", tmp_path / "coffea"
    run(RunConfig(analysis, data, flat, executor="iterative", progress=False, **kw))
    with monkeypatch.context() as m:
        m.setattr(executors, "run_flat", lambda *a: None)  # coffea's NanoEvents path
        run(RunConfig(analysis, data, coffea, executor="iterative", progress=False, **kw))
    return flat, coffea, reads


@pytest.mark.parametrize(
    ("analysis", "toy", "chunksize"),
    [("cms-hzz4l", "cms_toy_dir", 1500), ("atlas-hzz4l", "atlas_toy_dir", 700)],
)
def test_flat_read_gives_coffeas_nanoevents_results(analysis, toy, chunksize, request, tmp_path, monkeypatch):
    data = request.getfixturevalue(toy)
    flat, coffea, reads = _both_ways(analysis, data, tmp_path, monkeypatch, chunksize=chunksize)
    assert len(reads) > len({r.filename for r in reads})  # several chunks of a file, all flat
    _same_results(flat, coffea)


def test_nanoaod_plain_collections_give_coffeas_nanoevents_results(tmp_path, monkeypatch):
    """Simulation with generator and pileup weights, and triggered data inside a golden JSON."""
    from hepsieve.datasets.toys.cms_hzz4l_nanoaod import generate

    datasets = ["VBF_HToZZTo4L", "ZZTo4L", "DoubleMuon"]
    data = generate(tmp_path / "toys", events=900, seed=8, datasets=datasets)
    flat, coffea, reads = _both_ways(
        "cms-hzz4l-nanoaod", data, tmp_path, monkeypatch, chunksize=2000, datasets=datasets
    )
    assert len(reads) > len({r.filename for r in reads})
    _same_results(flat, coffea)
    cutflow = _cutflow(flat)
    assert {"DoubleMuon", "VBF_HToZZTo4L"} <= set(cutflow)  # data and simulation both compared
    muon = [v["n"] for v in cutflow["DoubleMuon"].values()]
    assert muon[0] > muon[1] > muon[2] > 0  # the trigger and the golden JSON both removed events


def _same_results(flat, coffea) -> None:
    assert _cutflow(flat) == _cutflow(coffea)
    a, b = _histograms(flat), _histograms(coffea)
    assert a.keys() == b.keys()
    for name in a:  # every variation and category, to the bit
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _write(path, values) -> bytes:
    with uproot.recreate(path) as fout:  # a TTree, as the flat read gets (RNTuples keep coffea's)
        fout.mktree("t", {"x": np.float64}).extend({"x": np.asarray(values, dtype=np.float64)})
    with uproot.open(path) as fin:
        return fin.file.fUUID


def test_a_file_rewritten_in_place_is_not_read_through_an_old_handle(tmp_path):
    path = str(tmp_path / "f.root")
    uuid = _write(path, [1.0, 2.0, 3.0])
    try:
        assert chunkread.open_tree(path, "t", {}, uuid).num_entries == 3
        _write(path, [4.0, 5.0, 6.0, 7.0])
        # the same UUID given (a fileset checked before the rewrite): the file's version decides
        tree = chunkread.open_tree(path, "t", {}, uuid)
        assert tree["x"].array(library="np").tolist() == [4.0, 5.0, 6.0, 7.0]
    finally:
        chunkread.close_all()


def test_a_thread_keeps_few_files_open_and_its_own(tmp_path):
    paths = [str(tmp_path / f"f{i}.root") for i in range(chunkread.KEEP_OPEN + 2)]
    try:
        trees = [chunkread.open_tree(p, "t", {}, _write(p, [float(i)])) for i, p in enumerate(paths)]
        assert len(chunkread.open_files()) == chunkread.KEEP_OPEN
        assert trees[-1]["x"].array(library="np").tolist() == [float(len(paths) - 1)]
        with pytest.raises(OSError, match="is closed"):  # the oldest was closed
            trees[0]["x"].array(library="np")
        with ThreadPoolExecutor(1) as other:  # another thread opens, and closes, its own
            assert other.submit(lambda: len(chunkread.open_files())).result() == 0
    finally:
        chunkread.close_all()


def test_a_failed_read_drops_the_files_handle_so_a_retry_reopens_it(tmp_path):
    path = str(tmp_path / "f.root")
    item = SimpleNamespace(
        filename=path, treename="t", entrystart=0, entrystop=2, fileuuid=_write(path, [1.0, 2.0])
    )
    try:
        assert chunkread.read_flat(item, ["x"], {}).x.tolist() == [1.0, 2.0]
        assert len(chunkread.open_files()) == 1
        with pytest.raises(ChunkReadError, match=r"f\.root entries 0-2: cannot be read"):
            chunkread.read_flat(item, ["nothere"], {})
        assert len(chunkread.open_files()) == 0
    finally:
        chunkread.close_all()


def test_a_branch_an_rntuple_lacks_is_an_error_not_dropped(tmp_path):
    path = str(tmp_path / "r.root")
    with uproot.recreate(path) as fout:
        fout["t"] = {"x": np.arange(3.0)}  # an RNTuple: uproot drops names it lacks, silently
    item = SimpleNamespace(filename=path, treename="t", entrystart=0, entrystop=3, fileuuid=b"")
    try:
        with pytest.raises(ChunkReadError, match=r"r\.root entries 0-3: cannot be read .*no branch\(es\) y"):
            chunkread.read_flat(item, ["x", "y"], {})
    finally:
        chunkread.close_all()


def test_nanoaod_branches_are_grouped_as_nanoevents_groups_them(nano_toy_dir):
    import awkward as ak
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    path = str(nano_toy_dir / "VBF_HToZZTo4L_0.root")
    names = ["run", "nMuon", "Muon_pt", "Muon_charge", "Muon_looseId", "nLHEScaleWeight", "LHEScaleWeight"]
    with uproot.open(path) as fin:
        names += fin["Events"].keys(filter_name="HLT_*")[:2]
        arrays = fin["Events"].arrays(names)
    meta = {"dataset": "VBF", "filename": path, "entrystart": 0, "entrystop": len(arrays)}
    ours = chunkread.nanoaod_events(arrays, meta)
    theirs = NanoEventsFactory.from_root({path: "Events"}, schemaclass=NanoAODSchema, mode="eager").events()
    assert sorted(ours.fields) == ["HLT", "LHEScaleWeight", "Muon", "run"]  # counts in the lists
    assert ours.metadata == meta and len(ours) == len(theirs)
    for name in ("Muon", "HLT"):
        assert set(ours[name].fields) <= set(theirs[name].fields)
        for field in ours[name].fields:  # the same lists per event (Muon), one value per event (HLT)
            assert ak.type(ours[name][field]) == ak.type(theirs[name][field]), (name, field)
            assert ak.all(ours[name][field] == theirs[name][field])
    assert isinstance(ours.Muon.layout, ak.contents.ListOffsetArray)  # lists of muon records
    assert ak.all(ak.num(ours.Muon, axis=1) == ak.num(theirs.Muon, axis=1))
    assert ak.all(ours.LHEScaleWeight == theirs.LHEScaleWeight)


def test_lists_of_one_collection_laid_out_apart_are_grouped_by_their_own_offsets():
    import awkward as ak

    # the same counts per event, but one branch's lists start further into its buffer
    arrays = ak.zip(
        {
            "Muon_pt": ak.Array([[9.0], [1.0], [2.0, 3.0]])[1:],
            "Muon_eta": ak.Array([[0.1], [0.2, 0.3]]),
            "HLT_Mu": np.array([True, False]),
        },
        depth_limit=1,
    )
    events = chunkread.nanoaod_events(arrays, {"filename": "f.root"})
    assert events.Muon.pt.tolist() == [[1.0], [2.0, 3.0]]
    assert events.Muon.eta.tolist() == [[0.1], [0.2, 0.3]]
    assert events.HLT.Mu.tolist() == [True, False] and events.fields == ["Muon", "HLT"]


def test_branches_of_one_collection_with_other_counts_are_one_read_error():
    import awkward as ak

    arrays = ak.Array({"Muon_pt": [[1.0], [2.0, 3.0]], "Muon_eta": [[0.1, 0.2], [0.3]]})
    meta = {"filename": "f.root", "entrystart": 0, "entrystop": 2}
    with pytest.raises(ChunkReadError, match=r"f\.root entries 0-2: the Muon_\* branches do not make one"):
        chunkread.nanoaod_events(arrays, meta)
