"""Run outputs: histograms.pkl, histograms.root (uproot), cutflow.json and run.json.

They are written atomically: into a temporary sibling directory, moved into place only when
every file is complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hist
import numpy as np
import uproot
import uproot.writing.identify

from hepsieve.processors.analysis import NOMINAL
from hepsieve.processors.errors import ConfigurationError
from hepsieve.processors.provenance import RunRecord

log = logging.getLogger(__name__)
OUTPUT_FILES = ("histograms.pkl", "histograms.root", "cutflow.json", "run.json")
MIN_FREE_BYTES = 64 * 2**20  # refuse to start a run whose output disk is nearly full
PROBE_BYTES = 2**20


def check_writable_dir(path: Path, option: str) -> None:
    """Check that ``path`` is (or can be made) a writable directory with room for a small probe.

    Raises ConfigurationError naming ``option`` (e.g. ``--out``) before any chunk is read.
    """
    if path.exists() and not path.is_dir():
        raise ConfigurationError(f"{option} {path}: is a file, not a directory")
    parent = path if path.is_dir() else next((p for p in path.parents if p.exists()), Path("/"))
    if not parent.is_dir():
        raise ConfigurationError(f"{option} {path}: {parent} is not a directory")
    probe = parent / f".hepsieve-probe-{os.getpid()}"
    try:
        with probe.open("wb") as fout:
            fout.write(b"\0" * PROBE_BYTES)
            fout.flush()
            os.fsync(fout.fileno())
    except OSError as err:
        raise ConfigurationError(f"{option} {path}: cannot write in {parent} ({err.strerror})") from err
    finally:
        probe.unlink(missing_ok=True)
    free = shutil.disk_usage(parent).free
    if free < MIN_FREE_BYTES:
        raise ConfigurationError(f"{option} {path}: only {free / 2**20:.0f} MB free on its disk")


class OutputDir:
    """A run's output directory, written atomically and by one run at a time.

    ``OutputDir(out)`` takes a lock next to ``out`` (a second run into the same directory is
    refused), and hands out a temporary sibling directory to write into. ``commit()`` moves it
    into place (an older ``out`` is replaced as a whole, never mixed with new files);
    ``close()`` without ``commit()`` removes the temporary directory and leaves ``out`` as it was.
    """

    def __init__(self, out: str | Path):
        self.out = Path(out).absolute()
        check_writable_dir(self.out, "--out")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.out.parent / f".{self.out.name}.lock"
        self._lock = self._lock_path.open("a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            owner = self._lock.read().strip() or "?"
            self._lock.close()
            raise ConfigurationError(
                f"--out {self.out}: another hepsieve run (pid {owner}) is "
                "writing it; wait for it or choose another directory"
            ) from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(str(os.getpid()))
        self._lock.flush()
        self.tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        self.committed = False

    def commit(self) -> Path:
        """Move the complete temporary directory into place; return the output directory."""
        old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
        if self.out.exists():
            self.out.rename(old)
        self.tmp.rename(self.out)
        shutil.rmtree(old, ignore_errors=True)
        self.committed = True
        return self.out

    def close(self) -> None:
        """Remove what was not committed and release the lock."""
        if not self.committed:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if self.out.is_dir() and (self.out / "run.json").is_file():
                log.warning("%s is unchanged: it holds the outputs of an earlier run", self.out)
        # the lock file stays: unlinking it would let two later runs lock different inodes
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()


@contextlib.contextmanager
def output_dir(out: str | Path) -> Iterator[OutputDir]:
    """Yield an :class:`OutputDir`; close it (removing the uncommitted files) on the way out."""
    target = OutputDir(out)
    try:
        yield target
    finally:
        target.close()


def attach_fills(histograms: dict[str, hist.Hist], fills: dict[tuple[str, str, str, str], int]) -> None:
    """Record in each histogram's metadata its number of fills per (dataset, category, variation)."""
    for h in histograms.values():
        h.metadata = {"fills": {}}
    for (name, dataset, category, variation), n in fills.items():
        histograms[name].metadata["fills"][(dataset, category, variation)] = n


def _taxis(axis: hist.axis.Regular, which: str) -> Any:
    edges = np.asarray(axis.edges, dtype=np.float64)
    uniform = np.allclose(np.diff(edges), edges[1] - edges[0])
    return uproot.writing.identify.to_TAxis(
        f"{which}axis",
        str(axis.label or axis.name),
        len(edges) - 1,
        edges[0],
        edges[-1],
        fXbins=None if uniform else edges,
    )


def to_root(h: hist.Hist, entries: float, name: str = "", title: str = "") -> Any:
    """Return a TH1D/TH2D of a 1-D/2-D Weight histogram with ROOT's statistics filled in.

    fTsumw = Σw and fTsumw2 = Σw² of the in-range bins (so ``GetEffectiveEntries`` is right),
    fEntries = the number of fills, the moments from the bin centres (as ROOT's ``ResetStats``).
    """
    values = np.asarray(h.values(flow=True), dtype=np.float64)
    variances = np.asarray(h.variances(flow=True), dtype=np.float64)
    inner = (slice(1, -1),) * h.ndim
    w, w2 = values[inner], variances[inner]
    centres = [np.asarray(a.centers, dtype=np.float64) for a in h.axes]
    common = {
        "fName": name,
        "fTitle": title,
        "fEntries": float(entries),
        "fTsumw": w.sum(),
        "fTsumw2": w2.sum(),
    }
    if h.ndim == 1:
        x = centres[0]
        return uproot.writing.identify.to_TH1x(
            data=values,
            fTsumwx=(w * x).sum(),
            fTsumwx2=(w * x * x).sum(),
            fSumw2=variances,
            fXaxis=_taxis(h.axes[0], "x"),
            **common,
        )
    x, y = np.meshgrid(centres[0], centres[1], indexing="ij")
    return uproot.writing.identify.to_TH2x(
        data=values.T.ravel(),
        fTsumwx=(w * x).sum(),
        fTsumwx2=(w * x * x).sum(),
        fTsumwy=(w * y).sum(),
        fTsumwy2=(w * y * y).sum(),
        fTsumwxy=(w * x * y).sum(),
        fSumw2=variances.T.ravel(),
        fXaxis=_taxis(h.axes[0], "x"),
        fYaxis=_taxis(h.axes[1], "y"),
        **common,
    )


def write_histograms_root(histograms: dict[str, hist.Hist], path: Path) -> None:
    """Write one TH1/TH2 per (histogram, category, dataset, variation) with ROOT statistics.

    Layout: ``<hist>/<category>/<dataset>`` for the nominal histograms and
    ``<hist>/<category>/<dataset>__<variation>`` for the others (where anything was filled).
    ``hepsieve stats`` writes the combine/cabinetry layout of fits.
    """
    with uproot.recreate(path) as fout:
        for name, h in histograms.items():
            fills = (h.metadata or {}).get("fills", {})
            variations = list(h.axes["variation"]) if "variation" in h.axes.name else [NOMINAL]
            for dataset in h.axes["dataset"]:
                for category in h.axes["category"]:
                    for variation in variations:
                        n = fills.get((dataset, category, variation), 0)
                        if variation != NOMINAL and n == 0:
                            continue
                        key = f"{name}/{category}/{dataset}" + (
                            "" if variation == NOMINAL else f"__{variation}"
                        )
                        one = h[{"dataset": dataset, "category": category, "variation": variation}]
                        fout[key] = to_root(one, n, key.rsplit("/", 1)[1], f"{name} {category} {dataset}")


def _fsync(path: Path) -> None:
    with path.open("rb") as fin:
        os.fsync(fin.fileno())


def write_outputs(
    out_dir: Path, histograms: dict[str, hist.Hist] | None, cutflow: dict, record: RunRecord
) -> list[Path]:
    """Write every run output into ``out_dir`` (flushed to disk) and return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if histograms is not None:
        with (out_dir / "histograms.pkl").open("wb") as fout:
            pickle.dump(histograms, fout)
        write_histograms_root(histograms, out_dir / "histograms.root")
        written += [out_dir / "histograms.pkl", out_dir / "histograms.root"]
    (out_dir / "cutflow.json").write_text(json.dumps(cutflow, indent=1))
    record.write(out_dir / "run.json")
    written += [out_dir / "cutflow.json", out_dir / "run.json"]
    for path in written:
        _fsync(path)
    return written


def load_histograms(run_dir: str | Path) -> dict[str, hist.Hist]:
    """Return the histograms of a finished run; ConfigurationError if the run left none."""
    path = Path(run_dir) / "histograms.pkl"
    if not path.is_file():
        raise ConfigurationError(
            f"{run_dir}: no histograms.pkl (a --mode features run, or not the "
            "output directory of a finished `hepsieve run`)"
        )
    try:
        with path.open("rb") as fin:
            return pickle.load(fin)
    except (OSError, pickle.UnpicklingError, EOFError) as err:
        raise ConfigurationError(f"{path}: cannot be read ({type(err).__name__}: {err})") from err
