"""ROOT RDataFrame peers of ``hepsieve bench`` (when ``import ROOT`` works: ``hepsieve[peers]``).

Each peer is the analysis written again in RDataFrame, independent of hepsieve's code:

- **atlas-hzz4l** (``mini`` trees): the identical object and event selection in C++ (JIT),
  float32 where the analysis computes in float32 so that a threshold decides the same way,
  the four-lepton mass and pT, the Z pairing and the weighted histograms per channel; the
  bench checks its cutflow, step by step, against the processor's to the event;
- **higgs-uci**: reads the 28 features and the label, fills ``m_bb`` and ``m_wwbb`` per
  label (no classifier: ROOT has no onnxruntime; SOFIE is not used here).

Every peer runs in its own spawned process with ``ROOT.EnableImplicitMT(threads)``;
``start``/``stop`` bracket the event loop (JIT of the declared C++ is start-up).
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

#: the ATLAS 4l selection in C++ (thresholds as in processors/analyses/hzz4l_atlas.py)
ATLAS_CPP = r"""
#include <ROOT/RVec.hxx>
#include <Math/Vector4D.h>
#include <cmath>
namespace hepsieve_peer {
using ROOT::RVecF; using ROOT::RVecI; using ROOT::RVecB;
ROOT::RVecB good(const RVecF &pt_mev, const RVecF &eta, const RVecF &ptcone, const RVecF &etcone,
                 const RVecF &sigd0, const RVecF &z0, const RVecI &type, const RVecB &tight) {
  ROOT::RVecB out(pt_mev.size());
  for (size_t i = 0; i < pt_mev.size(); ++i) {
    const bool e = type[i] == 11;
    const float pt = pt_mev[i] / 1000.f;
    const float theta = 2.f * std::atan(std::exp(-eta[i]));
    out[i] = tight[i] && (ptcone[i] / 1000.f < 0.3f * pt) && (etcone[i] / 1000.f < 0.3f * pt)
             && std::abs(sigd0[i]) < (e ? 5.0 : 3.0) && std::abs(z0[i] * std::sin(theta)) < 0.5f
             && pt > (e ? 7.0 : 5.0) && std::abs(eta[i]) < (e ? 2.47 : 2.5);
  }
  return out;
}
int good_sum(const RVecB &g, const RVecI &v) {
  int s = 0; for (size_t i = 0; i < g.size(); ++i) s += g[i] ? v[i] : 0; return s;
}
int sfos_sum(const RVecB &g, const RVecI &charge, const RVecI &type) {
  int s = 0; for (size_t i = 0; i < g.size(); ++i) s += (g[i] && type[i] == 11) ? charge[i] : 0; return s;
}
using V = ROOT::Math::PxPyPzEVector;
std::vector<V> four(const RVecB &g, const RVecF &pt, const RVecF &eta, const RVecF &phi, const RVecF &E) {
  std::vector<V> out;
  for (size_t i = 0; i < g.size(); ++i)
    if (g[i]) out.push_back(V(ROOT::Math::PtEtaPhiEVector(pt[i] / 1000.f, eta[i], phi[i], E[i] / 1000.f)));
  return out;
}
V sum4(const std::vector<V> &l) { return l[0] + l[1] + l[2] + l[3]; }
ROOT::RVecD zmasses(const std::vector<V> &l, const RVecB &g, const RVecI &charge_all, const RVecI &type_all) {
  RVecI q, t;
  for (size_t i = 0; i < g.size(); ++i) if (g[i]) { q.push_back(charge_all[i]); t.push_back(type_all[i]); }
  const int P[3][4] = {{0, 1, 2, 3}, {0, 2, 1, 3}, {0, 3, 1, 2}};
  double best = 1e300, z1 = NAN, z2 = NAN;
  for (auto &p : P) {
    auto sfos = [&](int a, int b) { return t[a] == t[b] && q[a] == -q[b]; };
    if (!(sfos(p[0], p[1]) && sfos(p[2], p[3]))) continue;
    double ma = (l[p[0]] + l[p[1]]).M(), mb = (l[p[2]] + l[p[3]]).M();
    for (int k = 0; k < 2; ++k) {
      double first = k ? mb : ma, second = k ? ma : mb, d = std::abs(first - 91.1876);
      if (d < best) { best = d; z1 = first; z2 = second; }
    }
  }
  return {z1, z2};
}
}
"""
ATLAS_STEPS = (
    ("trigE || trigM", "trigger"),
    ("hepsieve_peer::good_sum(good, ones) == 4", "four good leptons"),
    ("hepsieve_peer::good_sum(good, lep_charge) == 0", "charge"),
    ("int s = hepsieve_peer::good_sum(good, lep_type); return s == 44 || s == 48 || s == 52;", "flavour"),
    ("hepsieve_peer::sfos_sum(good, lep_charge, lep_type) == 0", "sfos"),
)
ATLAS_CHANNELS = {"4e": 44, "2e2mu": 48, "4mu": 52}
ATLAS_HISTOGRAMS = {
    "m4l": (34, 80, 250),
    "z1_mass": (30, 30, 120),
    "z2_mass": (30, 0, 120),
    "pt4l": (30, 0, 300),
}
ATLAS_MC_WEIGHT = (
    "double(mcWeight) * double(scaleFactor_PILEUP * scaleFactor_ELE * scaleFactor_MUON * "
    "scaleFactor_LepTRIGGER) * double(XSection) * {lumi} / double(SumWeights)"
)
HIGGS_FEATURES = 28


@functools.cache
def rdf_unavailable() -> str | None:
    """Return why the RDataFrame peers cannot run here (None: ``import ROOT`` works).

    Tried in a child process: imported into the bench's own process, ROOT (cling, its
    memory) would be inherited by every process forked from it later.
    """
    if importlib.util.find_spec("ROOT") is None:
        return "ROOT is not installed: RDataFrame rows left out; pip install 'hepsieve[peers]'"
    done = subprocess.run([sys.executable, "-c", "import ROOT"], capture_output=True, text=True, check=False)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"ROOT is not importable ({last}): RDataFrame rows left out; pip install 'hepsieve[peers]'"
    return None


def _root(threads: int):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the PyPI ROOT wheel warns that it is an alpha
        import ROOT
    ROOT.gROOT.SetBatch(True)
    if threads > 1:
        ROOT.EnableImplicitMT(threads)
    return ROOT


def _atlas_graph(ROOT, prefix: str, files: list[str], tree: str, meta: dict, lumi_pb: float) -> dict:
    """Book the cutflow counts, sums of weights and histograms of one dataset."""
    df = ROOT.RDataFrame(tree, files)
    weight = "1.0" if meta.get("is_data") else ATLAS_MC_WEIGHT.format(lumi=repr(float(lumi_pb)))
    df = df.Define("w", weight).Define(
        "good",
        "hepsieve_peer::good(lep_pt, lep_eta, lep_ptcone30, lep_etcone20, lep_tracksigd0pvunbiased, "
        "lep_z0, lep_type, lep_isTightID)",
    )
    df = df.Define("ones", "ROOT::RVecI(lep_pt.size(), 1)")
    counts = [("input", df.Count(), df.Sum("w"))]
    for expression, name in ATLAS_STEPS:
        df = df.Filter(expression, name)
        counts.append((name, df.Count(), df.Sum("w")))
    df = (
        df.Define("l4", "hepsieve_peer::four(good, lep_pt, lep_eta, lep_phi, lep_E)")
        .Define("p4", "hepsieve_peer::sum4(l4)")
        .Define("m4l", "p4.M()")
        .Define("pt4l", "p4.Pt()")
        .Define("zz", "hepsieve_peer::zmasses(l4, good, lep_charge, lep_type)")
        .Define("z1_mass", "zz[0]")
        .Define("z2_mass", "zz[1]")
        .Define("sum_type", "hepsieve_peer::good_sum(good, lep_type)")
    )
    hists = []
    for channel, code in ATLAS_CHANNELS.items():
        in_channel = df.Filter(f"sum_type == {code}")
        counts.append((f"category {channel}", in_channel.Count(), in_channel.Sum("w")))
        for name, (bins, lo, hi) in ATLAS_HISTOGRAMS.items():
            model = ROOT.RDF.TH1DModel(f"{prefix}_{channel}_{name}", name, bins, lo, hi)
            hists.append(in_channel.Histo1D(model, name, "w"))
    return {"counts": counts, "hists": hists}


def _warm_up(datasets: Sequence[tuple[str, list[str], dict]]) -> list[tuple[str, list[str], dict]]:
    """Return the smallest simulated and the smallest data dataset, for an untimed first pass.

    RDataFrame compiles (JIT) each distinct expression once per process: a first pass over
    one dataset of each kind (their weight expressions differ) moves that into the start-up.
    """
    from pathlib import Path

    def size(item: tuple[str, list[str], dict]) -> int:
        return sum(Path(f).stat().st_size for f in item[1])

    kinds: dict[bool, list] = {bool(meta.get("is_data")): [] for _, _, meta in datasets}
    for item in sorted(datasets, key=size):
        kinds[bool(item[2].get("is_data"))].append(item)
    return [items[0] for items in kinds.values()]


def atlas_rdf(
    datasets: Sequence[tuple[str, list[str], dict]], tree: str, lumi_pb: float, threads: int
) -> dict:
    """Run the ATLAS 4l peer over ``datasets`` ((name, files, metadata)); return cutflow and timing."""
    ROOT = _root(threads)
    begin = time.time()
    ROOT.gInterpreter.Declare(ATLAS_CPP)
    warm = [
        _atlas_graph(ROOT, f"warm_{ds}", files, tree, meta, lumi_pb) for ds, files, meta in _warm_up(datasets)
    ]
    ROOT.RDF.RunGraphs([c for g in warm for _, c, _ in g["counts"]])
    graphs = {ds: _atlas_graph(ROOT, ds, files, tree, meta, lumi_pb) for ds, files, meta in datasets}
    handles = [c for g in graphs.values() for _, c, _ in g["counts"]]
    start = time.time()
    ROOT.RDF.RunGraphs(handles)
    stop = time.time()
    cutflow = {
        ds: {name: {"n": int(c.GetValue()), "sumw": float(s.GetValue())} for name, c, s in g["counts"]}
        for ds, g in graphs.items()
    }
    events = sum(steps["input"]["n"] for steps in cutflow.values())
    return _timing(events, begin, start, stop) | {"cutflow": cutflow}


def _higgs_graph(ROOT, prefix: str, files: list[str], tree: str, features: Sequence[str]) -> tuple:
    """Book the per-label counts, a sum over the features and the m_bb, m_wwbb histograms."""
    df = ROOT.RDataFrame(tree, files).Define("feature_sum", " + ".join(f"double({f})" for f in features))
    handles, counts = [], {}
    for code, category in ((1, "signal"), (0, "background")):
        sel = df.Filter(f"label == {code}")
        counts[category] = sel.Count()
        handles += [counts[category], sel.Sum("feature_sum")]
        for name in ("m_bb", "m_wwbb"):
            handles.append(
                sel.Histo1D(ROOT.RDF.TH1DModel(f"{prefix}_{category}_{name}", name, 60, 0, 3), name)
            )
    return handles, counts


def higgs_rdf(
    datasets: Sequence[tuple[str, list[str], dict]], tree: str, threads: int, features: Sequence[str]
) -> dict:
    """Run the HIGGS peer (read features + label, fill per label, no ML); return counts and timing."""
    ROOT = _root(threads)
    begin = time.time()
    warm = [
        _higgs_graph(ROOT, f"warm_{ds}", files[:1], tree, features)[0] for ds, files, _ in _warm_up(datasets)
    ]
    ROOT.RDF.RunGraphs([h for hs in warm for h in hs])
    graphs = {ds: _higgs_graph(ROOT, ds, files, tree, features) for ds, files, _ in datasets}
    start = time.time()
    ROOT.RDF.RunGraphs([h for hs, _ in graphs.values() for h in hs])
    stop = time.time()
    cutflow = {ds: {c: {"n": int(n.GetValue())} for c, n in g[1].items()} for ds, g in graphs.items()}
    events = sum(v["n"] for cats in cutflow.values() for v in cats.values())
    return _timing(events, begin, start, stop) | {"cutflow": cutflow}


def _timing(events: float, begin: float, start: float, stop: float) -> dict[str, Any]:
    import resource

    return {
        "events": int(events),
        "start": start,
        "stop": stop,
        "declare_s": start - begin,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def compare_atlas_cutflow(rdf: dict, processor: dict, step_labels: Sequence[str]) -> list[str]:
    """Return the (dataset, step) where the RDF cutflow's event count differs from the processor's.

    ``step_labels``: the processor's labels of the selection steps, in the peer's order.
    """
    names = ["input", *(name for _, name in ATLAS_STEPS), *(f"category {c}" for c in ATLAS_CHANNELS)]
    ours = ["input", *step_labels, *(f"category {c}" for c in ATLAS_CHANNELS)]
    bad = []
    for ds, steps in rdf.items():
        for peer_name, label in zip(names, ours, strict=True):
            got, want = steps[peer_name]["n"], processor.get(ds, {}).get(label, {}).get("n")
            if got != want:
                bad.append(f"{ds} {label}: RDF {got}, hepsieve {want}")
    return bad
