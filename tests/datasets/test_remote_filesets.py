"""Remote and URL inputs (served over HTTP from 127.0.0.1), coffea filesets, coffea's preprocess
output and `hepsieve fileset` (issue 16, items 3-5)."""

import json
import os
import shutil
import socket
import time
import warnings

import numpy as np
import pytest

from hepsieve.datasets import filesets
from hepsieve.datasets.filesets import load_fileset_spec
from hepsieve.datasets.remote import check_url
from hepsieve.processors import ConfigurationError, InputFileError, RunConfig, run
from hepsieve.processors.analyses.hzz4l_cms import TREE
from hepsieve.processors.cli import main
from hepsieve.processors.processor import AnalysisProcessor

DATASETS = ["VBF_HToZZTo4mu", "ZZTo4mu"]
SPEC = load_fileset_spec("cms-hzz4l")


def _run(fileset, out=None, data_dir=None, **kw):
    kw.setdefault("executor", "iterative")
    return run(RunConfig("cms-hzz4l", data_dir, out, fileset=fileset, chunksize=1000, progress=False, **kw))


def _fileset(tmp_path, files: dict[str, list[str]], name="fs.json"):
    """A hepsieve fileset of ``files`` (dataset -> entries) with the shipped metadata."""
    datasets = {ds: {"files": f, "metadata": SPEC["datasets"][ds]["metadata"]} for ds, f in files.items()}
    path = tmp_path / name
    top = {k: SPEC[k] for k in ("tree", "lumi_pb", "lumi_uncertainty", "processes")}
    path.write_text(json.dumps(top | {"datasets": datasets}))
    return str(path)


@pytest.fixture(scope="module")
def local(cms_toy_dir):
    """The reference: the two datasets read from the local directory (iterative)."""
    return run(
        RunConfig(
            "cms-hzz4l",
            cms_toy_dir,
            None,
            datasets=DATASETS,
            executor="iterative",
            chunksize=1000,
            progress=False,
        )
    )


def _by_label(h):
    """Return {category labels: view} of a histogram (category order follows the chunk order)."""
    import itertools

    cats = [ax for ax in h.axes if ax.traits.discrete and not ax.traits.ordered]
    out = {}
    for labels in itertools.product(*(list(ax) for ax in cats)):
        out[labels] = h[dict(zip([ax.name for ax in cats], labels, strict=True))].view(flow=True)
    return out


def _assert_same(result, reference, exact=True):
    """Same cutflow counts and histograms; ``exact=False``: sums to 1e-12 (chunks merged in another order)."""
    rtol = 0 if exact else 1e-12
    assert result.cutflow.keys() == reference.cutflow.keys()
    for dataset, steps in reference.cutflow.items():
        for step, v in steps.items():
            assert result.cutflow[dataset][step]["n"] == v["n"]
            assert result.cutflow[dataset][step]["sumw"] == pytest.approx(v["sumw"], rel=rtol, abs=0)
    assert result.histograms.keys() == reference.histograms.keys()
    for name, h in reference.histograms.items():
        expected, found = _by_label(h), _by_label(result.histograms[name])
        assert found.keys() == expected.keys(), name
        for labels, a in expected.items():
            b = found[labels]
            np.testing.assert_allclose(b["value"], a["value"], rtol=rtol, atol=0, err_msg=f"{name} {labels}")
            np.testing.assert_allclose(
                b["variance"], a["variance"], rtol=rtol, atol=0, err_msg=f"{name} {labels}"
            )


def _urls(server, names=DATASETS):
    return {ds: [f"{server.url}/{ds}.root"] for ds in names}


def test_https_style_urls_give_the_histograms_of_the_local_run(cms_toy_dir, file_server, local, tmp_path):
    with file_server(cms_toy_dir) as server:
        result = _run(_fileset(tmp_path, _urls(server)), tmp_path / "o")
        served = set(server.handler.requests)
    _assert_same(result, local)
    record = json.loads((tmp_path / "o" / "run.json").read_text())
    urls = {ds: [f"{server.url}/{ds}.root"] for ds in DATASETS}
    assert record["fileset"] == urls  # never rewritten into local paths
    assert {f"/{ds}.root" for ds in DATASETS} <= served  # and really read over HTTP
    for dataset in DATASETS:  # every entry accounted for, per file
        acc = record["accounting"][dataset]
        assert acc["processed"] == acc["expected"] == 3000 and acc["lost"] == {}
    assert record.get("data_dir") is None


def test_urls_on_dask_workers_preflight_there_and_agree(
    cms_toy_dir, file_server, local, tmp_path, monkeypatch
):
    here, check_root = os.getpid(), filesets._check_root

    def not_here(*args, **kwargs):
        if os.getpid() == here:  # forked workers inherit this patch: they check as before
            raise AssertionError("the client opened an input file")
        return check_root(*args, **kwargs)

    monkeypatch.setattr(filesets, "_check_root", not_here)
    with file_server(cms_toy_dir) as server:
        fs = _fileset(tmp_path, _urls(server))
        result = _run(fs, executor="dask", workers=2)  # remote URLs: preflight on the workers
        with pytest.raises(InputFileError, match="the client opened an input file"):
            _run(fs, executor="dask", workers=1, preflight_on_workers=False)
    _assert_same(result, local, exact=False)


def test_preflight_on_workers_needs_no_data_dir_here(cms_toy_dir, local, tmp_path, monkeypatch):
    """--preflight-on-workers with local paths: this process neither checks nor opens them."""

    def not_here(*args, **kwargs):
        raise AssertionError("the client opened an input file")

    monkeypatch.setattr(filesets, "_check_root", not_here)
    fs = _fileset(tmp_path, {ds: [f"{ds}.root"] for ds in DATASETS})
    result = _run(fs, data_dir=cms_toy_dir, executor="futures", workers=2, preflight_on_workers=True)
    _assert_same(result, local, exact=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_is_one_error_naming_it_or_skipped_and_reported(
    cms_toy_dir, file_server, tmp_path, capsys
):
    dead = f"http://127.0.0.1:{_closed_port()}/ZZTo4mu.root"
    with file_server(cms_toy_dir) as server:
        fs = _fileset(tmp_path, {"VBF_HToZZTo4mu": [f"{server.url}/VBF_HToZZTo4mu.root"], "ZZTo4mu": [dead]})
        argv = [
            "-q",
            "run",
            "cms-hzz4l",
            "--fileset",
            fs,
            "--out",
            str(tmp_path / "o"),
            "--executor",
            "iterative",
        ]
        start = time.perf_counter()
        assert main([*argv, "--remote-retries", "1"]) == 2
        err = capsys.readouterr().err
        assert f"{dead}: cannot be read after 2 attempts" in err and err.count("\n") == 1, err
        assert time.perf_counter() - start < 20
        assert main([*argv, "--skip-bad-files", "--remote-retries", "0"]) == 0
    record = json.loads((tmp_path / "o" / "run.json").read_text())
    assert any(s.startswith(f"{dead}: cannot be read") for s in record["skipped_files"])
    assert list(record["accounting"]) == ["VBF_HToZZTo4mu"] and record["events"] == 3000


def test_missing_url_is_not_retried_and_a_silent_server_times_out(cms_toy_dir, file_server, tmp_path):
    with file_server(cms_toy_dir) as server:
        fs = _fileset(tmp_path, {"ZZTo4mu": [f"{server.url}/nothere.root"]})
        with pytest.raises(InputFileError, match=r"nothere.root: cannot be read \(FileNotFoundError"):
            _run(fs)
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/ZZTo4mu.root"
        start = time.perf_counter()
        with pytest.raises(InputFileError, match=rf"{url}: cannot be read after 2 attempts"):
            _run(_fileset(tmp_path, {"ZZTo4mu": [url]}), remote_timeout_s=1, remote_retries=1)
        assert time.perf_counter() - start < 15


def test_truncated_file_over_http_fails_the_preflight_naming_the_url(cms_toy_dir, file_server, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    data = (cms_toy_dir / "ZZTo4mu.root").read_bytes()
    (served / "ZZTo4mu.root").write_bytes(data[: int(len(data) * 0.9)])
    with file_server(served) as server:
        url = f"{server.url}/ZZTo4mu.root"
        with pytest.raises(InputFileError, match=rf"^{url}: cannot be read"):
            _run(_fileset(tmp_path, {"ZZTo4mu": [url]}))


def test_file_urls_are_read_as_written(cms_toy_dir, local, tmp_path):
    urls = {ds: [f"file://{cms_toy_dir / ds}.root"] for ds in DATASETS}
    result = _run(_fileset(tmp_path, urls))
    assert result.record.fileset == urls
    _assert_same(result, local)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1/a.root", "scheme ftp:// is not supported"),
        ("root://127.0.0.1//store/a.root", "pip install 'hepsieve[xrootd]'"),
        ("s3://bucket/a.root", "pip install 'hepsieve[s3]'"),
    ],
)
def test_urls_without_a_handler_name_the_url_and_what_to_install(url, message):
    scheme = url.split(":")[0]
    module = {"root": "fsspec_xrootd", "s3": "s3fs"}.get(scheme)
    if module and __import__("importlib").util.find_spec(module):
        pytest.skip(f"{module} is installed here: {scheme}:// has a handler")
    with pytest.raises(ConfigurationError, match=rf"^{url}: .*{message.replace('[', '.').replace(']', '.')}"):
        check_url(url)


def test_xrootd_urls_read_through_fsspec_xrootd():
    pytest.importorskip(
        "fsspec_xrootd", reason="fsspec-xrootd is not installed (pip install 'hepsieve[xrootd]')"
    )
    check_url("root://127.0.0.1//store/a.root")  # a handler exists: no error


# --- coffea's fileset form and preprocess output ---


def _coffea_fileset(cms_toy_dir, names=DATASETS):
    return {
        ds: {
            "files": {str(cms_toy_dir / f"{ds}.root"): TREE},
            "metadata": SPEC["datasets"][ds]["metadata"]
            | {"lumi_pb": SPEC["lumi_pb"], "lumi_uncertainty": SPEC["lumi_uncertainty"]},
        }
        for ds in names
    }


def test_coffea_fileset_form_gives_the_same_histograms(cms_toy_dir, local, tmp_path):
    path = tmp_path / "coffea.json"
    path.write_text(json.dumps(_coffea_fileset(cms_toy_dir)))
    spec = load_fileset_spec(path)
    assert spec["tree"] == TREE and spec["datasets"]["ZZTo4mu"]["files"] == [
        str(cms_toy_dir / "ZZTo4mu.root")
    ]
    _assert_same(_run(str(path)), local)


def test_coffea_fileset_with_several_trees_is_refused(cms_toy_dir, tmp_path):
    fs = _coffea_fileset(cms_toy_dir)
    fs["ZZTo4mu"]["files"] = {str(cms_toy_dir / "ZZTo4mu.root"): "Events"}
    path = tmp_path / "two.json"
    path.write_text(json.dumps(fs))
    with pytest.raises(ConfigurationError, match=r"several trees .*one tree per fileset"):
        load_fileset_spec(path)


def _preprocessed(cms_toy_dir, step_size, **kw):
    from coffea.dataset_tools import preprocess

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # coffea's advice to use its pydantic classes
        available, _ = preprocess(_coffea_fileset(cms_toy_dir), step_size=step_size, scheduler="sync", **kw)
    return json.loads(json.dumps(available, default=str))


@pytest.fixture
def chunk_ranges(monkeypatch):
    """Record the (file, start, stop) of every chunk processed in this process."""
    seen = []
    original = AnalysisProcessor.process

    def recorded(self, events):
        m = events.metadata
        seen.append((m["filename"].rsplit("/", 1)[-1], m["entrystart"], m["entrystop"]))
        return original(self, events)

    monkeypatch.setattr(AnalysisProcessor, "process", recorded)
    return seen


def test_preprocess_output_steps_and_uuids_are_used_without_reopening(
    cms_toy_dir, local, tmp_path, monkeypatch, chunk_ranges
):
    available = _preprocessed(cms_toy_dir, step_size=700)
    path = tmp_path / "preprocessed.json"
    path.write_text(json.dumps(available))
    opened = []
    monkeypatch.setattr(filesets, "_check_root", lambda *a, **k: opened.append(a) or {})
    result = _run(str(path), tmp_path / "o")
    assert opened == []  # entries and uuids from preprocess, types from its form
    steps = {
        (f.rsplit("/", 1)[-1], a, b)
        for v in available.values()
        for f, i in v["files"].items()
        for a, b in i["steps"]
    }
    assert set(chunk_ranges) == steps and len(chunk_ranges) == len(steps)  # its steps, not --chunksize
    _assert_same(result, local, exact=False)  # other chunks: sums in another order
    uuids = {f: i["uuid"] for v in available.values() for f, i in v["files"].items()}
    meta = result.record.fileset
    assert {f for files in meta.values() for f in files} == set(uuids)


def test_preprocess_output_without_a_form_is_checked_by_opening_the_files(
    cms_toy_dir, local, tmp_path, monkeypatch
):
    available = _preprocessed(cms_toy_dir, step_size=1000, preprocess_legacy_root=True)
    assert all(v.get("form") is None for v in available.values())
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps(available))
    calls = []
    original = filesets._check_root
    monkeypatch.setattr(filesets, "_check_root", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    _assert_same(_run(str(path)), local)
    assert len(calls) == 2  # no form to check the branch types against: opened and checked


def test_preprocess_form_with_a_wrong_branch_type_is_named(cms_toy_dir, tmp_path):
    from coffea.util import compress_form, decompress_form

    available = _preprocessed(cms_toy_dir, step_size=1000)
    form = json.loads(decompress_form(available["ZZTo4mu"]["compressed_form"]))
    index = form["fields"].index("f_mass4l")
    form["contents"][index]["primitive"] = "int32"
    available["ZZTo4mu"]["compressed_form"] = compress_form(json.dumps(form))
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps(available))
    with pytest.raises(
        InputFileError, match=r"preprocess form.: branch 'f_mass4l' is int, the analysis reads it as float"
    ):
        _run(str(path))


def test_hepsieve_fileset_writes_a_coffea_fileset_from_a_directory_or_urls(
    cms_toy_dir, file_server, local, tmp_path, caplog
):
    d = tmp_path / "d"
    d.mkdir()
    for ds in DATASETS:
        shutil.copy(cms_toy_dir / f"{ds}.root", d)
    (d / "unrelated.root").write_bytes(b"x")
    out = tmp_path / "from_dir.json"
    assert main(["fileset", "cms-hzz4l", str(d), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert set(written) == set(DATASETS)
    assert written["ZZTo4mu"]["files"] == {str((d / "ZZTo4mu.root").resolve()): TREE}
    assert written["ZZTo4mu"]["metadata"]["role"] == SPEC["datasets"]["ZZTo4mu"]["metadata"]["role"]
    assert written["ZZTo4mu"]["metadata"]["lumi_pb"] == SPEC["lumi_pb"]
    assert written["ZZTo4mu"]["metadata"]["lumi_uncertainty"] == SPEC["lumi_uncertainty"]
    _assert_same(_run(str(out)), local)
    with file_server(cms_toy_dir) as server:
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(f"{server.url}/{ds}.root\n" for ds in DATASETS))
        out_urls = tmp_path / "from_urls.json"
        assert main(["fileset", "cms-hzz4l", str(urls), "--out", str(out_urls)]) == 0
        assert json.loads(out_urls.read_text())["ZZTo4mu"]["files"] == {f"{server.url}/ZZTo4mu.root": TREE}
        _assert_same(_run(str(out_urls)), local)
    assert "unrelated.root: its name matches no dataset" in caplog.text


def test_hepsieve_fileset_gives_each_dataset_the_role_of_its_process():
    spec = {
        "tree": "t",
        "lumi_pb": 10.0,
        "lumi_uncertainty": 0.02,
        "processes": {"sig": {"label": "S", "role": "signal"}},
        "datasets": {"A": {"files": ["a_*.root"], "metadata": {"process": "sig"}}},
    }
    written, unmatched = filesets.build_fileset(spec, ["https://h/a_1.root", "/d/b.root"])
    assert written["A"]["files"] == {"https://h/a_1.root": "t"} and unmatched == ["/d/b.root"]
    assert written["A"]["metadata"] == {
        "process": "sig",
        "role": "signal",
        "lumi_pb": 10.0,
        "lumi_uncertainty": 0.02,
    }
