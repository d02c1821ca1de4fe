"""The analysis registry: built-in analyses, ``module:ATTR`` references and installed plug-ins.

An analysis is named on the command line (and in :class:`~hepsieve.processors.RunConfig`)
by a registered name (``cms-hzz4l``), by ``module:ATTR`` of any importable module
(``my_analysis:ANALYSIS``, a file in the working directory works too), or through the
entry-point group ``hepsieve.analyses`` of an installed package::

    [project.entry-points."hepsieve.analyses"]
    my-dilepton = "my_package.dilepton:ANALYSIS"

Modules are imported only when their analysis is asked for.
"""

from __future__ import annotations

import importlib
import logging
import site
import sys
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from hepsieve.processors.analysis import Analysis
from hepsieve.processors.errors import ConfigurationError

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "hepsieve.analyses"

#: name -> "module:attribute" of the analyses shipped with hepsieve
BUILTIN: dict[str, str] = {
    "cms-hzz4l": "hepsieve.processors.analyses.hzz4l_cms:ANALYSIS",
    "cms-hzz4l-nanoaod": "hepsieve.processors.analyses.hzz4l_cms_nanoaod:ANALYSIS",
    "atlas-hzz4l": "hepsieve.processors.analyses.hzz4l_atlas:ANALYSIS",
    "higgs-uci": "hepsieve.processors.analyses.higgs_uci:ANALYSIS",
    "atlas-dm": "hepsieve.processors.analyses.atlas_dm:ANALYSIS",
}


@dataclass(frozen=True)
class AnalysisEntry:
    """One available analysis: its name, ``module:attribute`` and where it comes from."""

    name: str
    target: str
    source: str


def available() -> list[AnalysisEntry]:
    """Return the built-in analyses and those installed through the entry-point group."""
    entries = [AnalysisEntry(n, t, "built-in") for n, t in BUILTIN.items()]
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        entries.append(AnalysisEntry(ep.name, ep.value, f"entry point of {dist}"))
    return entries


def load_object(target: str) -> object:
    """Import ``"package.module:attribute"`` and return the attribute; ConfigurationError if not."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ConfigurationError(f"{target!r} is not of the form module:ATTRIBUTE")
    try:
        obj: object = _import(module)
    except ImportError as err:
        raise ConfigurationError(f"{target}: cannot import module {module!r} ({err})") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigurationError(f"{target}: module {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _import(module: str) -> object:
    """Import ``module``; a module file in the working directory is found as ``python -m`` would."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".", maxsplit=1)[0]
        local = Path.cwd() / f"{top}.py"
        if err.name != top or not (local.is_file() or (Path.cwd() / top).is_dir()):
            raise
    sys.path.insert(0, str(Path.cwd()))
    return importlib.import_module(module)


def _installed(path: str | None) -> bool:
    if path is None:
        return True
    prefixes = [*site.getsitepackages(), site.getusersitepackages(), sysconfig.get_paths()["stdlib"]]
    return any(Path(path).resolve().is_relative_to(Path(p).resolve()) for p in prefixes)


def ship_by_value(analysis: Analysis) -> list[str]:
    """Let worker processes run an analysis whose module they cannot import; return its name.

    An analysis in a file of the user's working directory (not an installed package) is sent
    to the workers by value: cloudpickle, which coffea uses to send the processor, then sends
    the module's functions instead of a reference the workers could not resolve.
    """
    import cloudpickle

    shipped = []
    for fn in (analysis.weights.nominal, analysis.categories.assign):
        top = sys.modules.get(getattr(fn, "__module__", "").split(".")[0])
        if top is None or top.__name__.startswith("hepsieve") or top.__name__ == "__main__":
            continue  # hepsieve is installed on the workers; __main__ is pickled by value anyway
        if not _installed(getattr(top, "__file__", None)):
            cloudpickle.register_pickle_by_value(top)
            shipped.append(top.__name__)
    return shipped


def get_analysis(ref: str | Analysis) -> Analysis:
    """Return the :class:`Analysis` for a registered name, ``module:ATTR`` or an Analysis."""
    if isinstance(ref, Analysis):
        return ref
    entries = {e.name: e for e in available()}
    if ref in entries:
        target = entries[ref].target
    elif ":" in ref:
        target = ref
    else:
        raise ConfigurationError(
            f"unknown analysis {ref!r}; known: {', '.join(entries)} "
            "(or give module:ATTRIBUTE of your own Analysis)"
        )
    obj = load_object(target)
    if not isinstance(obj, Analysis):
        raise ConfigurationError(f"{target} is a {type(obj).__name__}, not a hepsieve.processors.Analysis")
    return obj


__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "AnalysisEntry",
    "available",
    "get_analysis",
    "load_object",
    "ship_by_value",
]
