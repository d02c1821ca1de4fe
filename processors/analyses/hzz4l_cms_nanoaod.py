"""CMS H->ZZ->4l on NanoAOD (tree ``Events``): the baseline selection, the features of cms-hzz4l.

Objects (SCHEMAS.md section 6; Run 2 isolation): identified, isolated muons (``looseId``,
pT > 5 GeV, |eta| < 2.4) and electrons (``cutBased`` >= loose, pT > 7 GeV, |eta| < 2.5), both
with |dxy| < 0.5 cm, |dz| < 1 cm, |SIP3D| < 4 and relative PF isolation < 0.35
(``pfRelIso04_all`` for muons, ``pfRelIso03_all`` for electrons).

ZZ candidates: every four of those leptons (``ak.combinations``) in each of their three
pairings into two same-flavour opposite-sign (SFOS) pairs, Z1 the pair closer to m_Z. Steps,
each passed by an event with at least one candidate passing it and every step before it:
ΔR > 0.02 between all four leptons, a ZZ candidate, m(ll) > 4 GeV for every opposite-sign pair
of the four (any flavour), Z1 in 40-120 GeV, Z2 in 12-120 GeV, leading/sub-leading pT >
20/10 GeV, m4l > 70 GeV and the "smart cut" (4e/4mu: the alternative pairing Za Zb must not
have Za closer to m_Z than Z1 with m_Zb < 12 GeV). Of the candidates passing everything, the
one with Z1 closest to m_Z is chosen (ties: the larger scalar pT sum of the Z2 leptons).
Channels 4e, 2e2mu, 4mu from the chosen leptons' flavours.

Jets: pT > 30 GeV, |eta| < 4.7, the tight ID bit of ``Jet_jetId`` where the file has it
(NanoAOD v15 dropped it: jets are then taken without ID), ΔR > 0.4 from every identified,
isolated lepton. Category ``vbf_<channel>``: >= 2 such jets; ``untagged_<channel>``: the rest.

Features: the cms-hzz4l ones, same names, units and definitions (``f_massjj`` the mass of the
two leading jets, ``f_deltajj`` their |Δη|, ``f_mass4l``, ``f_Z1mass``, ``f_Z2mass``; -999 where
undefined), so the reduced-ntuple models apply unchanged (``scoring.models_from``).

Weights: simulation ``genWeight x xsec_pb x br x lumi_pb / Σ genEventSumw`` (signed; ``br``
defaults to 1; Σ over the ``Runs`` trees of all the dataset's files, summed in the preflight);
data 1. Data: the golden-JSON lumi mask (metadata ``lumi_mask``; coffea ``LumiMask``'s lookup,
in numpy: :func:`lumi_mask`) and the
HLT paths of the fileset's ``triggers`` table (``{primary dataset: [paths]}``, in priority
order): an event of primary dataset k counts only if it fires k's paths and none of an
earlier one's, so an event in DoubleEG and DoubleMuon is counted once. Simulation needs any
path of the table (or no table). The analysis reads the dataset metadata from
``events.metadata``, which coffea's NanoEvents carry.

Variations (simulation): the luminosity (fileset ``lumi_uncertainty``); the generator-level
weights where a file has them: renormalisation and factorisation scales from
``LHEScaleWeight`` (μR, μF = 2 and 1/2 with the other scale at 1), initial- and final-state
shower from ``PSWeight`` (ISR, FSR = 2 and 1/2); pile-up from NanoAOD-tools'
``puWeightUp/Down`` over ``puWeight`` where the file has them (``puWeight`` is then part of the
nominal weight). Events without the branch's weights get a factor 1 (the variation is then
absent, not invented); an unexpected number of weights is an error naming the branch. Shape
variation: the lepton momentum scale (muons 0.1 %, electrons 0.3 %, as cms-hzz4l), which
moves pT before the lepton selection and re-runs it.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import awkward as ak
import fsspec
import numba
import numpy as np
import vector

from hepsieve.processors.analyses.fourlepton import Z_MASS_GEV, zz_candidates
from hepsieve.processors.analyses.hzz4l_cms import HIGH_LEVEL, JET_BRANCHES, LEPTON_BRANCHES, UNDEFINED
from hepsieve.processors.analysis import (
    Analysis,
    Categories,
    FeatureSpec,
    FileSum,
    Inputs,
    Scoring,
    ShapeVariation,
    Step,
    Style,
    Tools,
    Weights,
    WeightVariation,
    branch_types,
    flat_values,
    histogram,
    record,
    relative_variation,
)
from hepsieve.processors.errors import ConfigurationError, DataValueError

log = logging.getLogger(__name__)

# --- schema (SCHEMAS.md section 6) and the metadata keys of the fileset ---
TREE = "Events"
RUNS_TREE = "Runs"
SUMW_KEY = "genEventSumw"  # metadata key of Σ genEventSumw over a dataset's files
LUMI_MASK_KEY = "lumi_mask"
TRIGGERS_KEY = "triggers"
PRIMARY_DATASET_KEY = "primary_dataset"
MUON_FIELDS = ("pt", "eta", "phi", "mass", "charge", "pfRelIso04_all", "sip3d", "dxy", "dz", "looseId")
ELECTRON_FIELDS = ("pt", "eta", "phi", "mass", "charge", "pfRelIso03_all", "sip3d", "dxy", "dz", "cutBased")
JET_FIELDS = ("pt", "eta", "phi", "mass")
INT_FIELDS = ("charge", "cutBased")
BOOL_FIELDS = ("looseId",)

# --- lepton selection [GeV, cm] ---
MUON_PT_MIN, MUON_ETA_MAX = 5.0, 2.4
ELECTRON_PT_MIN, ELECTRON_ETA_MAX = 7.0, 2.5
DXY_MAX_CM, DZ_MAX_CM = 0.5, 1.0
SIP3D_MAX = 4.0
RELISO_MAX = 0.35
ELECTRON_ID_MIN = 2  # Electron_cutBased: 0 fail, 1 veto, 2 loose, 3 medium, 4 tight
# --- ZZ candidates [GeV] ---
GHOST_DR_MIN = 0.02
MLL_MIN = 4.0
Z1_WINDOW = (40.0, 120.0)
Z2_WINDOW = (12.0, 120.0)
LEADING_PT_MIN, SUBLEADING_PT_MIN = 20.0, 10.0
M4L_MIN = 70.0
SMART_CUT_ZB_MIN = 12.0
# --- jets [GeV] ---
JET_PT_MIN, JET_ETA_MAX = 30.0, 4.7
JET_LEPTON_DR_MIN = 0.4
JET_ID_TIGHT_BIT = 2  # bit 1 of Jet_jetId: tight
VBF_MIN_JETS = 2
CHANNELS = {44: "4e", 48: "2e2mu", 52: "4mu"}  # sum of the four leptons' |pdgId|
CATEGORIES = tuple(f"{jets}_{ch}" for jets in ("vbf", "untagged") for ch in CHANNELS.values())
VBF_CATEGORIES = tuple(c for c in CATEGORIES if c.startswith("vbf_"))
# --- systematic uncertainties ---
#: relative lepton momentum scale by |pdgId| (CMS H->ZZ->4l: muons ~0.1 %, electrons ~0.3 %)
LEPTON_SCALE = {13: 0.001, 11: 0.003}
#: generator weights (w_var / w_nominal): branch -> {number of weights: {variation: (up, down)}}
#: (LHEScaleWeight [k] = muR x muF in {0.5, 1, 2}^2, row-major; 8 weights: the nominal [4] left out)
GENERATOR_WEIGHTS = {
    "LHEScaleWeight": {9: {"muR": (7, 1), "muF": (5, 3)}, 8: {"muR": (6, 1), "muF": (4, 3)}},
    "PSWeight": {4: {"isr": (2, 0), "fsr": (3, 1)}},  # [0] ISR=0.5, [1] FSR=0.5, [2] ISR=2, [3] FSR=2
}
PILEUP_WEIGHT = "puWeight"  # NanoAOD-tools' pile-up weight, with puWeightUp / puWeightDown

#: candidate-level steps in order: (step name, cutflow label)
CANDIDATE_STEPS = (
    ("ghost", f"ΔR(l,l) > {GHOST_DR_MIN:g} (four leptons)"),
    ("zz", "ZZ candidate: two SFOS pairs"),
    ("mll", f"m(ll) > {MLL_MIN:g} GeV, all OS pairs"),
    ("z1", f"Z1 in {Z1_WINDOW[0]:g}-{Z1_WINDOW[1]:g} GeV"),
    ("z2", f"Z2 in {Z2_WINDOW[0]:g}-{Z2_WINDOW[1]:g} GeV"),
    ("lepton_pt", f"lepton pT > {LEADING_PT_MIN:g}/{SUBLEADING_PT_MIN:g} GeV"),
    ("m4l", f"m4l > {M4L_MIN:g} GeV"),
    ("smart", f"smart cut (m_Zb > {SMART_CUT_ZB_MIN:g} GeV or Z1 closer)"),
)


def _collection_branches(name: str, fields: tuple[str, ...]) -> dict[str, str]:
    kinds = {f: "int" if f in INT_FIELDS else "bool" if f in BOOL_FIELDS else "float" for f in fields}
    return {f"n{name}": "int", **{f"{name}_{f}": f"var * {k}" for f, k in kinds.items()}}


BRANCHES = {
    **branch_types("int", "run", "luminosityBlock", "event"),
    **_collection_branches("Muon", MUON_FIELDS),
    **_collection_branches("Electron", ELECTRON_FIELDS),
    **_collection_branches("Jet", JET_FIELDS),
}


def good_muons(muons: ak.Array, pt: np.ndarray | None = None) -> np.ndarray:
    """Return the identified, isolated muons as a flat mask over all muons of the chunk.

    ``pt``: flat muon pT [GeV] to cut on instead of the file's (a momentum-scale variation).
    """
    pt = flat_values(muons.pt) if pt is None else pt
    return (
        flat_values(muons.looseId)
        & (pt > MUON_PT_MIN)
        & (np.abs(flat_values(muons.eta)) < MUON_ETA_MAX)
        & (np.abs(flat_values(muons.dxy)) < DXY_MAX_CM)
        & (np.abs(flat_values(muons.dz)) < DZ_MAX_CM)
        & (np.abs(flat_values(muons.sip3d)) < SIP3D_MAX)
        & (flat_values(muons.pfRelIso04_all) < RELISO_MAX)
    )


def good_electrons(electrons: ak.Array, pt: np.ndarray | None = None) -> np.ndarray:
    """Return the identified, isolated electrons as a flat mask over all electrons of the chunk.

    ``pt``: flat electron pT [GeV] to cut on instead of the file's (a momentum-scale variation).
    """
    pt = flat_values(electrons.pt) if pt is None else pt
    return (
        (flat_values(electrons.cutBased) >= ELECTRON_ID_MIN)
        & (pt > ELECTRON_PT_MIN)
        & (np.abs(flat_values(electrons.eta)) < ELECTRON_ETA_MAX)
        & (np.abs(flat_values(electrons.dxy)) < DXY_MAX_CM)
        & (np.abs(flat_values(electrons.dz)) < DZ_MAX_CM)
        & (np.abs(flat_values(electrons.sip3d)) < SIP3D_MAX)
        & (flat_values(electrons.pfRelIso03_all) < RELISO_MAX)
    )


@dataclass(frozen=True)
class LeptonTable:
    """The chunk's identified, isolated leptons as flat columns (muons, then electrons, per event).

    ``columns``: pt, eta, phi, mass [GeV], charge, pdg (11 or 13); ``counts``: per event.
    """

    columns: dict[str, np.ndarray]
    counts: np.ndarray

    def __getitem__(self, mask: np.ndarray) -> LeptonTable:
        """Return the table of the events where ``mask`` is True."""
        keep = np.repeat(mask, self.counts)
        return LeptonTable({k: v[keep] for k, v in self.columns.items()}, self.counts[mask])


def _good_columns(coll: ak.Array, pdg: int, scale: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Return the flat columns of the good leptons of one collection and each one's event.

    ``scale``: factor on pT (1: nominal), applied before the selection.
    """
    counts = ak.to_numpy(ak.num(coll.pt, axis=1))
    pt = flat_values(coll.pt) * np.float32(scale) if scale != 1.0 else flat_values(coll.pt)
    good = good_muons(coll, pt) if pdg == 13 else good_electrons(coll, pt)
    cols = {f: flat_values(coll[f])[good] for f in ("eta", "phi", "mass")} | {"pt": pt[good]}
    cols["charge"] = flat_values(coll.charge)[good].astype(np.int8)
    cols["pdg"] = np.full(np.count_nonzero(good), pdg, dtype=np.int8)
    return cols, np.repeat(np.arange(len(counts)), counts)[good]


def lepton_table(muons: ak.Array, electrons: ak.Array, direction: int = 0) -> LeptonTable:
    """Return the good muons and electrons of a chunk, merged per event, as a :class:`LeptonTable`.

    Each event's muons come first, then its electrons; the merged position of every lepton is
    computed from the per-event counts (no sort). ``direction`` +1/-1: lepton pT scaled by
    1 ± :data:`LEPTON_SCALE` before the selection.
    """
    n = len(muons)
    parts = [
        _good_columns(muons, 13, 1.0 + direction * LEPTON_SCALE[13]),
        _good_columns(electrons, 11, 1.0 + direction * LEPTON_SCALE[11]),
    ]
    n_good = [np.bincount(owner, minlength=n) for _, owner in parts]
    counts = n_good[0] + n_good[1]
    start = np.cumsum(counts) - counts
    columns = {k: np.empty(int(counts.sum()), dtype=v.dtype) for k, v in parts[0][0].items()}
    before = np.zeros(n, dtype=np.int64)  # leptons of the event placed by earlier collections
    for (cols, owner), n_coll in zip(parts, n_good, strict=True):
        rank = np.arange(len(owner)) - (np.cumsum(n_coll) - n_coll)[owner]
        position = start[owner] + before[owner] + rank
        for k, v in cols.items():
            columns[k][position] = v
        before = before + n_coll
    return LeptonTable(columns, counts)


@dataclass(frozen=True)
class FourLeptons:
    """The object record of a chunk: selection flags, the chosen ZZ candidate, the good leptons.

    ``flags``: step name -> bool per event; ``best``: the chosen candidate's quantities per
    event (NaN where there is none); ``table``: the identified, isolated leptons as flat
    columns, against which jets are cleaned (:attr:`leptons`: the same as coffea records).
    """

    flags: dict[str, np.ndarray]
    best: dict[str, np.ndarray]
    table: LeptonTable

    def __len__(self) -> int:
        return len(self.table.counts)

    @property
    def leptons(self) -> ak.Array:
        """Return the identified, isolated leptons per event (coffea ``PtEtaPhiMCandidate``)."""
        return candidates(self.table)

    def __getitem__(self, mask: np.ndarray) -> FourLeptons:
        """Return the record of the events where ``mask`` is True."""
        return FourLeptons(
            {k: v[mask] for k, v in self.flags.items()},
            {k: v[mask] for k, v in self.best.items()},
            self.table[mask],
        )


def _quadruplets(table: LeptonTable) -> tuple[np.ndarray, np.ndarray]:
    """Return every 4-lepton combination per event as (n_quads, 4) flat indices, and its event."""
    per_event = ak.unflatten(np.arange(len(table.columns["pt"])), table.counts)
    quads = ak.combinations(per_event, 4)
    n_quads = ak.to_numpy(ak.num(quads, axis=1))
    index = np.stack([flat_values(quads[str(k)]) for k in range(4)], axis=1).astype(np.int64)
    return index.reshape(-1, 4), np.repeat(np.arange(len(n_quads)), n_quads)


def _candidate_cuts(cands) -> dict[str, np.ndarray]:
    """Return each candidate-level cut as an (n_quads, 3) mask (quadruplet cuts broadcast)."""

    def quad(x):
        return np.broadcast_to(x[:, None], cands.valid.shape)

    return {
        "ghost": quad(cands.min_delta_r > GHOST_DR_MIN),
        "zz": cands.valid,
        "mll": quad(cands.min_os_mass > MLL_MIN),
        "z1": (cands.z1_mass > Z1_WINDOW[0]) & (cands.z1_mass < Z1_WINDOW[1]),
        "z2": (cands.z2_mass > Z2_WINDOW[0]) & (cands.z2_mass < Z2_WINDOW[1]),
        "lepton_pt": quad((cands.lead_pt > LEADING_PT_MIN) & (cands.sublead_pt > SUBLEADING_PT_MIN)),
        "m4l": quad(cands.m4l > M4L_MIN),
        "smart": cands.smart_ok,
    }


@numba.njit(cache=True)
def _choose_kernel(passing, owner, z1_mass, z2_sum_pt, chosen) -> None:
    """Fill ``chosen`` (per event, -1) with the flat index of its best passing candidate.

    Best: Z1 closest to m_Z, then the larger Z2 pT sum, then the first in order (as a stable
    sort on these keys).
    """
    dist = np.full(len(chosen), np.inf)
    z2 = np.zeros(len(chosen))
    for q in range(passing.shape[0]):
        e = owner[q]
        for p in range(3):
            if not passing[q, p]:
                continue
            d = abs(z1_mass[q, p] - Z_MASS_GEV)
            if chosen[e] < 0 or d < dist[e] or (d == dist[e] and z2_sum_pt[q, p] > z2[e]):
                chosen[e], dist[e], z2[e] = 3 * q + p, d, z2_sum_pt[q, p]


def _choose(cands, passing: np.ndarray, owner: np.ndarray, n_events: int) -> np.ndarray:
    """Return per event the flat index (quad x 3 + pairing) of its chosen candidate, -1 if none.

    Z1 closest to m_Z, then the larger Z2 pT sum (:func:`_choose_kernel`).
    """
    chosen = np.full(n_events, -1, dtype=np.int64)
    _choose_kernel(passing, owner, cands.z1_mass, cands.z2_sum_pt, chosen)
    return chosen


def _best_columns(table: LeptonTable, index: np.ndarray, cands, chosen: np.ndarray) -> dict:
    """Return the chosen candidates' Z masses, m4l, channel and pT-ordered leptons (NaN: none)."""
    has = chosen >= 0
    c = chosen[has]
    quad = index[c // 3]
    n = len(chosen)

    def per_event(values, fill=np.nan):
        out = np.full((n, *values.shape[1:]), fill, dtype=np.float64)
        out[has] = values
        return out

    pt = table.columns["pt"][quad]
    order = np.argsort(-pt, axis=1, kind="stable")
    rows = np.arange(len(quad))[:, None]
    best = {
        "z1_mass": per_event(cands.z1_mass.ravel()[c]),
        "z2_mass": per_event(cands.z2_mass.ravel()[c]),
        "m4l": per_event(cands.m4l[c // 3]),
        "sum_pdg": per_event(table.columns["pdg"][quad].astype(np.int64).sum(axis=1), 0),
    }
    for name in ("pt", "eta", "phi"):
        ordered = per_event(table.columns[name][quad][rows, order])
        for i in range(4):
            best[f"lep{i + 1}_{name}"] = ordered[:, i]
    return best


def _event_depth(depth: np.ndarray, owner: np.ndarray, n_events: int) -> np.ndarray:
    """Return per event the most candidate steps passed in a row by any of its candidates."""
    out = np.zeros(n_events, dtype=np.int8)
    if len(owner):
        starts = np.flatnonzero(np.diff(owner, prepend=-1))  # quadruplets come grouped by event
        out[owner[starts]] = np.maximum.reduceat(depth.max(axis=1), starts)
    return out


def four_lepton_selection(table: LeptonTable) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Return the per-event flags of the lepton steps and the chosen ZZ candidate's quantities."""
    n = len(table.counts)
    four = table.counts >= 4
    table = table[four]  # the only events with quadruplets: the rest needs no lepton arithmetic
    index, owner = _quadruplets(table)
    owner = np.flatnonzero(four)[owner]
    cands = zz_candidates({**table.columns, "flavour": table.columns["pdg"]}, index, SMART_CUT_ZB_MIN)
    cuts = _candidate_cuts(cands)
    passing = np.ones(cands.valid.shape, dtype=bool)
    depth = np.zeros(cands.valid.shape, dtype=np.int8)  # candidate steps passed in a row
    for name, _ in CANDIDATE_STEPS:
        passing = passing & cuts[name]
        depth += passing
    event_depth = _event_depth(depth, owner, n)
    flags = {"four_leptons": four}
    flags |= {name: event_depth > k for k, (name, _) in enumerate(CANDIDATE_STEPS)}
    return flags, _best_columns(table, index, cands, _choose(cands, passing, owner, n))


def _paths(names: Collection[str]) -> list[str]:
    """Return HLT path names without the ``HLT_`` prefix (the NanoEvents ``HLT`` field names)."""
    return [p.removeprefix("HLT_") for p in names]


def _trigger_table(meta: Mapping) -> dict[str, list[str]]:
    table = meta.get(TRIGGERS_KEY) or {}
    if not isinstance(table, Mapping) or not all(
        isinstance(p, list) and p and all(isinstance(x, str) for x in p) for p in table.values()
    ):
        raise ConfigurationError(
            f"metadata {TRIGGERS_KEY!r} must map primary datasets to lists of HLT paths, got {table!r}"
        )
    return {pd: _paths(paths) for pd, paths in table.items()}


def trigger_paths(meta: Mapping) -> dict[str, list[str]]:
    """Return the primary datasets whose HLT paths a dataset's events are tested on, in order.

    Data: its own primary dataset and every one before it in the table (to remove the
    overlap); simulation: the whole table (empty: no trigger requirement).
    """
    table = _trigger_table(meta)
    if not meta.get("is_data"):
        return table
    own = meta.get(PRIMARY_DATASET_KEY)
    if own not in table:
        raise ConfigurationError(
            f"data needs metadata {PRIMARY_DATASET_KEY!r} naming one of the primary datasets of "
            f"{TRIGGERS_KEY!r} {list(table)}, got {own!r}"
        )
    names = list(table)
    return {pd: table[pd] for pd in names[: names.index(own) + 1]}


def dataset_branches(meta: Mapping) -> dict[str, str]:
    """Return the HLT branches a dataset's metadata asks for; ConfigurationError if data lacks any."""
    if meta.get("is_data") and not meta.get(LUMI_MASK_KEY):
        raise ConfigurationError(f"data needs metadata {LUMI_MASK_KEY!r}: the golden JSON of its runs")
    if meta.get("is_data") and not meta.get(TRIGGERS_KEY):
        raise ConfigurationError(f"data needs metadata {TRIGGERS_KEY!r}: {{primary dataset: [HLT paths]}}")
    if not meta.get(TRIGGERS_KEY):
        log.warning(
            "simulation (process %s) without a %r table in its metadata: no HLT requirement applied",
            meta.get("process", "?"),
            TRIGGERS_KEY,
        )
    return {f"HLT_{p}": "bool" for paths in trigger_paths(meta).values() for p in paths}


def trigger_mask(hlt: ak.Array, meta: Mapping) -> np.ndarray:
    """Return the trigger decision per event, with the overlap between primary datasets removed."""
    table = trigger_paths(meta)
    if not table:
        return np.ones(len(hlt), dtype=bool)
    fired = {pd: np.logical_or.reduce([ak.to_numpy(hlt[p]) for p in paths]) for pd, paths in table.items()}
    if not meta.get("is_data"):
        return np.logical_or.reduce(list(fired.values()))
    *earlier, own = fired
    return fired[own] & ~np.logical_or.reduce([fired[pd] for pd in earlier] or [np.zeros(len(hlt), bool)])


@functools.lru_cache(maxsize=8)
def _lumi_ranges(path: str) -> dict[int, np.ndarray]:
    """Return the golden JSON as coffea's ``LumiMask`` holds it: run -> [lo - 1, hi, lo - 1, hi, ...].

    The lookup below is coffea's (``searchsorted`` on these uint32 bounds, odd index: inside)
    in numpy: importing ``coffea.lumi_tools`` compiles its numba kernels (6 s per worker
    process, measured), and a test checks that the two masks agree.
    """
    with fsspec.open(path) as fin:
        golden = json.load(fin)
    out = {}
    for run, ranges in golden.items():
        bounds = np.array(ranges, dtype=np.uint32).flatten()
        bounds[::2] -= 1
        out[int(np.uint32(run))] = bounds
    return out


def lumi_mask(path: str, runs: np.ndarray, lumis: np.ndarray) -> np.ndarray:
    """Return True for the (run, lumi section) pairs inside the golden JSON at ``path``."""
    ranges = _lumi_ranges(path)
    runs, lumis = np.asarray(runs).astype(np.uint32), np.asarray(lumis).astype(np.uint32)
    out = np.zeros(len(runs), dtype=bool)
    order = np.argsort(runs, kind="stable")
    edges = np.flatnonzero(np.diff(runs[order], prepend=np.int64(-1), append=np.int64(-1)))
    for lo, hi in itertools.pairwise(edges):  # one pass per run of the chunk
        bounds = ranges.get(int(runs[order[lo]]))
        if bounds is not None:
            rows = order[lo:hi]
            out[rows] = np.searchsorted(bounds, lumis[rows]) % 2 == 1
    return out


def golden_mask(events: ak.Array, meta: Mapping) -> np.ndarray:
    """Return True for simulation and for data in the golden JSON's (run, lumi section) ranges."""
    if not meta.get("is_data"):
        return np.ones(len(events), dtype=bool)
    runs, lumis = ak.to_numpy(events.run), ak.to_numpy(events.luminosityBlock)
    return lumi_mask(str(meta[LUMI_MASK_KEY]), runs, lumis)


def candidates(leptons: LeptonTable) -> ak.Array:
    """Return the good leptons per event as coffea ``PtEtaPhiMCandidate`` records."""
    from coffea.nanoevents.methods import candidate

    cols = {k: v for k, v in leptons.columns.items() if k != "pdg"}
    cols = {"pt": cols.pop("pt"), **cols}  # field order as in the files
    return ak.unflatten(
        ak.zip(cols, with_name="PtEtaPhiMCandidate", behavior=candidate.behavior), leptons.counts
    )


def objects(events: ak.Array, direction: int = 0) -> FourLeptons:
    """Return the chunk's object record (once per chunk, on every event).

    ``direction`` +1/-1: with the lepton momentum scale varied up/down (:func:`lepton_table`).
    """
    meta = events.metadata
    table = lepton_table(events.Muon, events.Electron, direction)
    lepton_flags, best = four_lepton_selection(table)
    hlt = events.HLT if "HLT" in events.fields else ak.Array(np.zeros(len(events)))
    flags = {"trigger": trigger_mask(hlt, meta), "golden": golden_mask(events, meta), **lepton_flags}
    return FourLeptons(flags, best, table)


def lepton_scale(events: ak.Array, record: FourLeptons, meta: Mapping, direction: int) -> tuple:
    """Return the events and their object record made again with the lepton momentum scale varied."""
    return events, objects(events, direction)


def weights(events: ak.Array, objects: FourLeptons, meta: Mapping) -> np.ndarray:
    """Return ``genWeight x xsec_pb x br x lumi_pb / Σ genEventSumw`` for simulation, 1 for data."""
    if meta.get("is_data"):
        return np.ones(len(events))
    missing = [k for k in (SUMW_KEY, "xsec_pb", "lumi_pb") if not meta.get(k)]
    if missing:
        raise ConfigurationError(
            f"dataset {meta.get('dataset')}: metadata lacks {', '.join(missing)} (xsec_pb and lumi_pb "
            f"come from the fileset, {SUMW_KEY} from the files' {RUNS_TREE} trees)"
        )
    scale = float(meta["xsec_pb"]) * float(meta.get("br", 1.0)) * float(meta["lumi_pb"]) / meta[SUMW_KEY]
    w = ak.to_numpy(events.genWeight).astype(np.float64) * scale
    return w * ak.to_numpy(events[PILEUP_WEIGHT]) if PILEUP_WEIGHT in events.fields else w


def _generator_factor(branch: str, variation: str, up: bool):
    """Return the factor function of one generator-weight variation (1 where the file has none)."""

    def factor(events: ak.Array, objects: FourLeptons, meta: Mapping) -> np.ndarray | float:
        if branch not in events.fields:
            return 1.0
        weights = events[branch]
        n = ak.to_numpy(ak.num(weights, axis=1))
        unknown = sorted(set(np.unique(n)) - {0, *GENERATOR_WEIGHTS[branch]})
        if unknown:
            raise DataValueError(
                f"{branch} has {unknown[0]} weights per event; the {variation} variation reads "
                f"{' or '.join(map(str, GENERATOR_WEIGHTS[branch]))} (or none)"
            )
        out = np.ones(len(n))
        for length, table in GENERATOR_WEIGHTS[branch].items():
            rows = n == length
            if rows.any():
                out[rows] = ak.to_numpy(weights[rows][:, table[variation][0 if up else 1]])
        return out

    return factor


def _pileup_factor(direction: str):
    def factor(events: ak.Array, objects: FourLeptons, meta: Mapping) -> np.ndarray | float:
        name = f"{PILEUP_WEIGHT}{direction}"
        if name not in events.fields or PILEUP_WEIGHT not in events.fields:
            return 1.0
        nominal = ak.to_numpy(events[PILEUP_WEIGHT]).astype(np.float64)
        return np.divide(ak.to_numpy(events[name]), nominal, out=np.ones(len(nominal)), where=nominal != 0)

    return factor


WEIGHT_VARIATIONS = (
    relative_variation("lumi", "lumi_uncertainty", "integrated luminosity"),
    *(
        WeightVariation(
            name,
            _generator_factor(branch, name, True),
            _generator_factor(branch, name, False),
            f"{branch}: {name} x2 / x1/2 (where present)",
        )
        for branch, tables in GENERATOR_WEIGHTS.items()
        for name in next(iter(tables.values()))
    ),
    WeightVariation("pileup", _pileup_factor("Up"), _pileup_factor("Down"), "puWeightUp/Down if present"),
)


def _flag(name: str):
    def mask(events: ak.Array, objects: FourLeptons) -> np.ndarray:
        return objects.flags[name]

    return mask


SELECTION = (
    Step("trigger", "HLT (primary-dataset overlap removed)", _flag("trigger")),
    Step("golden", "golden JSON (data)", _flag("golden")),
    Step("four_leptons", "≥ 4 identified, isolated leptons", _flag("four_leptons")),
    *(Step(name, label, _flag(name)) for name, label in CANDIDATE_STEPS),
)


@numba.njit(cache=True)
def _clean_jets(counts, pt, eta, phi, jet_id, lep_counts, lep_eta, lep_phi, lead, n_good) -> None:
    """Fill per event the good jets' number and the flat indices of the two leading ones (-1: none).

    Good: pT > 30 GeV, |eta| < 4.7, the tight ID bit (``jet_id`` empty: no ID), ΔR > 0.4
    (`vector`, in float64) from every lepton of the event. Leading: by pT, the earlier jet
    first on a tie (as a stable sort).
    """
    k0, m0 = 0, 0
    for e in range(len(counts)):
        first, second = -1, -1
        for k in range(k0, k0 + counts[e]):
            if not (pt[k] > JET_PT_MIN and abs(eta[k]) < JET_ETA_MAX):
                continue
            if len(jet_id) and (jet_id[k] & JET_ID_TIGHT_BIT) == 0:
                continue
            jet = vector.obj(rho=1.0, phi=np.float64(phi[k]), eta=np.float64(eta[k]))
            clean = True
            for m in range(m0, m0 + lep_counts[e]):
                lep = vector.obj(rho=1.0, phi=np.float64(lep_phi[m]), eta=np.float64(lep_eta[m]))
                if jet.deltaR(lep) <= JET_LEPTON_DR_MIN:
                    clean = False
                    break
            if clean:
                n_good[e] += 1
                if first < 0 or pt[k] > pt[first]:
                    first, second = k, first
                elif second < 0 or pt[k] > pt[second]:
                    second = k
        lead[e, 0], lead[e, 1] = first, second
        k0 += counts[e]
        m0 += lep_counts[e]


def good_jets(jets: ak.Array, leptons: LeptonTable) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """Return the two leading good jets' columns (float64; 0 where absent) and the good jets per event.

    Good: pT > 30 GeV, |eta| < 4.7, the tight ID where the file has ``Jet_jetId``, ΔR > 0.4
    from every identified, isolated lepton of the event (:func:`_clean_jets`).
    """
    counts = ak.to_numpy(ak.num(jets.pt, axis=1))
    cols = {f: flat_values(jets[f]) for f in JET_FIELDS}
    jet_id = flat_values(jets.jetId) if "jetId" in jets.fields else np.zeros(0, dtype=np.int32)
    lead = np.empty((len(counts), 2), dtype=np.int64)
    n_jets = np.zeros(len(counts), dtype=np.int64)
    lep = leptons.columns
    _clean_jets(
        counts,
        cols["pt"],
        cols["eta"],
        cols["phi"],
        jet_id,
        leptons.counts,
        lep["eta"],
        lep["phi"],
        lead,
        n_jets,
    )
    out = []
    for i in range(2):
        has = lead[:, i] >= 0
        rows = np.where(has, lead[:, i], 0)
        out.append(
            {f: np.where(has, v[rows].astype(np.float64) if len(v) else 0.0, 0.0) for f, v in cols.items()}
        )
    return out, n_jets


def _jet_columns(lead: list[dict[str, np.ndarray]], n_jets: np.ndarray) -> dict[str, np.ndarray]:
    """Return f_jet1/2 (pt, eta, phi), f_massjj, f_deltajj (-999 where undefined) and n_jets.

    m_jj in float64 (`vector`): summed in float32, forward jets (E >> m_jj) lose 1e-4 of it.
    """
    out: dict[str, np.ndarray] = {"n_jets": n_jets}
    for i in range(2):
        has = n_jets > i
        for name in ("pt", "eta", "phi"):
            out[f"f_jet{i + 1}_{name}"] = np.where(has, lead[i][name], UNDEFINED)
    has_two = n_jets >= VBF_MIN_JETS
    dijet = vector.array(lead[0]) + vector.array(lead[1])
    out["f_massjj"] = np.where(has_two, dijet.mass, UNDEFINED)
    out["f_deltajj"] = np.where(has_two, np.abs(lead[0]["eta"] - lead[1]["eta"]), UNDEFINED)
    return out


def observables(events: ak.Array, selected: FourLeptons) -> ak.Array:
    """Return the features and histogram values of selected events (the chosen ZZ candidate)."""
    best = selected.best
    cols = {
        "f_mass4l": best["m4l"],
        "f_Z1mass": best["z1_mass"],
        "f_Z2mass": best["z2_mass"],
        "sum_pdg": best["sum_pdg"].astype(np.int64),
        **{f"f_lept{i}_{v}": best[f"lep{i}_{v}"] for i in range(1, 5) for v in ("pt", "eta", "phi")},
        **_jet_columns(*good_jets(events.Jet, selected.table)),
    }
    return record(cols, len(selected))


def categorize(observed: ak.Array) -> dict[str, np.ndarray]:
    """Return ``vbf_<channel>`` (>= 2 jets) and ``untagged_<channel>`` masks of selected events."""
    sum_pdg, vbf = ak.to_numpy(observed.sum_pdg), ak.to_numpy(observed.n_jets) >= VBF_MIN_JETS
    out = {}
    for code, channel in CHANNELS.items():
        out[f"vbf_{channel}"] = (sum_pdg == code) & vbf
        out[f"untagged_{channel}"] = (sum_pdg == code) & ~vbf
    return out


def describe_file(names: Collection[str]) -> str:
    """Return which NanoAOD version a file's ``Events`` branch names look like, and why."""
    has = set(names)
    met = "PFMET_*" if "PFMET_pt" in has else "MET_*" if "MET_pt" in has else "no MET"
    jet_id = "Jet_jetId" if "Jet_jetId" in has else "no Jet_jetId (jets taken without ID)"
    if "PFMET_pt" in has and "Jet_jetId" not in has:
        version = "NanoAOD >= v15"
    elif "Electron_mvaIso" in has or "Electron_mvaIso_WP90" in has:
        version = "NanoAOD v12-v14"
    elif any(n.startswith("Electron_mvaFall17V2") for n in has):
        version = "Run 2 NanoAOD (<= v9)"
    else:
        version = "NanoAOD of an unrecognised version"
    return f"{version} ({met}, {jet_id})"


def _columns(observed: ak.Array) -> ak.Array:
    return observed


INPUTS = Inputs(
    name="nanoaod",
    schema="nanoaod",
    event_id="event",
    branches=BRANCHES,
    mc_branches=branch_types("float", "genWeight"),
    optional={
        "Jet_jetId": "var * int",
        **{b: k for g in GENERATOR_WEIGHTS for b, k in ((f"n{g}", "int"), (g, "var * float"))},
        **branch_types("float", PILEUP_WEIGHT, f"{PILEUP_WEIGHT}Up", f"{PILEUP_WEIGHT}Down"),
    },
    file_sums=(FileSum(SUMW_KEY, RUNS_TREE, ("genEventSumw", "genEventSumw_")),),
    dataset_branches=dataset_branches,
    metadata_files=(LUMI_MASK_KEY,),
    describe=describe_file,
    plain_collections=True,  # fields only: chunks read flat, no NanoEvents built
)

ANALYSIS = Analysis(
    name="cms-hzz4l-nanoaod",
    inputs=INPUTS,
    objects=objects,
    selection=SELECTION,
    weights=Weights(weights, variations=WEIGHT_VARIATIONS),
    shape_variations=(
        ShapeVariation("lepton_scale", lepton_scale, "lepton momentum scale (0.1 % mu, 0.3 % e)"),
    ),
    observables=observables,
    categories=Categories(CATEGORIES, categorize),
    features={
        "high-level": FeatureSpec(HIGH_LEVEL, _columns, units=("GeV", "", "GeV", "GeV", "GeV")),
        "low-level": FeatureSpec(LEPTON_BRANCHES + JET_BRANCHES, _columns, units=("GeV", "", "rad") * 6),
    },
    histograms=(
        histogram("m4l", 66, 70, 400, r"$m_{4\ell}$ [GeV]", lambda o: o.f_mass4l),
        histogram("mjj", 40, 0, 2000, r"$m_{jj}$ [GeV]", lambda o: o.f_massjj, categories=VBF_CATEGORIES),
        histogram(
            "delta_eta_jj", 36, 0, 9, r"$|\Delta\eta_{jj}|$", lambda o: o.f_deltajj, categories=VBF_CATEGORIES
        ),
        histogram("z1_mass", 40, 40, 120, r"$m_{Z_1}$ [GeV]", lambda o: o.f_Z1mass),
        histogram("z2_mass", 36, 12, 120, r"$m_{Z_2}$ [GeV]", lambda o: o.f_Z2mass),
    ),
    scoring=Scoring(
        categories=VBF_CATEGORIES, cut_histogram="m4l", score_cut=0.6, models_from=("cms-hzz4l",)
    ),
    style=Style(experiment="CMS", title="CMS H→ZZ→4ℓ (NanoAOD)", energy_tev=13),
    tools=Tools(toy_generator="hepsieve.datasets.toys.cms_hzz4l_nanoaod:generate"),
    numba_kernels=True,  # the ZZ candidates, their choice and the jet cleaning
)
