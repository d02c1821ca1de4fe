"""The model card: the JSON file next to a model's ONNX files (its one owner: write, read, check).

Schema (``card_version`` 1), documented for people carding models trained elsewhere in
``models/README.md``:

* ``name``, ``analysis`` (the analysis' name), ``feature_set`` and ``features`` (ordered
  ``{"name", "unit"}``: the ONNX input columns);
* ``input``: ``{"name", "dtype": "float32", "shape": ["batch", n_features], "preprocessing"}``;
* ``output``: ``{"name", "column", "meaning"}`` (``column``: which column of a 2-D output
  holds P(signal); null for a 1-D output);
* ``k`` and ``folds``: one ``{"fold", "file", "sha256", "trained_on", "applied_to", ...}`` per
  fold; fold ``i`` is applied to events with ``event % k == i`` and must not have seen them;
* provenance: ``kind``, ``description``, ``hyperparameters``, ``seed``, ``training_data``,
  ``reproduce``, ``versions``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hepsieve.processors.errors import ModelCardError

CARD_VERSION = 1
REQUIRED = ("name", "analysis", "feature_set", "features", "output", "folds", "k")


def sha256_bytes(data: bytes) -> str:
    """Return the hex sha256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ModelOutput:
    """The ONNX output holding P(signal): its name and, for a 2-D output, the column."""

    name: str
    column: int | None = None
    meaning: str = "P(signal)"


@dataclass(frozen=True)
class Fold:
    """One fold model: its ONNX file (relative to the card), sha256 and the events it saw."""

    fold: int
    file: str
    sha256: str
    trained_on: str
    applied_to: str
    n_train: int | None = None
    n_apply: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelCard:
    """A checked model card; ``path`` is where it was read from (ONNX files sit beside it)."""

    name: str
    analysis: str
    feature_set: str
    features: tuple[tuple[str, str], ...]  # (name, unit) in ONNX input order
    output: ModelOutput
    k: int
    folds: tuple[Fold, ...]
    input: dict[str, Any] = field(default_factory=dict)
    kind: str = "external"
    description: str = ""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    training_data: dict[str, Any] = field(default_factory=dict)
    reproduce: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    card_version: int = CARD_VERSION
    path: Path | None = None

    def __post_init__(self) -> None:
        where = f"model card {self.path or self.name}"
        if self.k < 2 or len(self.folds) != self.k:
            raise ModelCardError(f"{where}: k={self.k} but {len(self.folds)} folds (k >= 2)")
        if [f.fold for f in self.folds] != list(range(self.k)):
            raise ModelCardError(f"{where}: folds must be numbered 0..{self.k - 1}")
        if not self.features:
            raise ModelCardError(f"{where}: no features")
        if self.card_version > CARD_VERSION:
            raise ModelCardError(
                f"{where}: card_version {self.card_version} is newer than this "
                f"hepsieve reads ({CARD_VERSION}); upgrade hepsieve"
            )

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Return the ordered input feature names."""
        return tuple(name for name, _ in self.features)

    def onnx_path(self, fold: int) -> Path:
        """Return the path of fold ``fold``'s ONNX file."""
        base = self.path.parent if self.path is not None else Path()
        return base / self.folds[fold].file

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form of the card."""
        out = asdict(self)
        out.pop("path")
        out["features"] = [{"name": n, "unit": u} for n, u in self.features]
        out["input"] = self.input or {
            "name": "features",
            "dtype": "float32",
            "shape": ["batch", len(self.features)],
            "preprocessing": "inside the ONNX graph (raw features in)",
        }
        return out

    def write(self, path: str | Path) -> Path:
        """Write the card as JSON at ``path`` (through a temporary file and a rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> ModelCard:
        """Return the card of a JSON dict; ModelCardError naming the card on any problem."""
        where = f"model card {path or data.get('name', '?')}"
        for key in REQUIRED:
            if key not in data:
                raise ModelCardError(f"{where}: missing key {key!r}")
        try:
            features = tuple((f["name"], f.get("unit", "")) for f in data["features"])
            folds = tuple(Fold(**f) for f in sorted(data["folds"], key=lambda f: f["fold"]))
            output = ModelOutput(**data["output"])
            extra = {
                k: data[k]
                for k in (
                    "input",
                    "kind",
                    "description",
                    "hyperparameters",
                    "seed",
                    "training_data",
                    "reproduce",
                    "versions",
                    "card_version",
                )
                if k in data
            }
            return cls(
                name=data["name"],
                analysis=data["analysis"],
                feature_set=data["feature_set"],
                features=features,
                output=output,
                k=int(data["k"]),
                folds=folds,
                path=path,
                **extra,
            )
        except (TypeError, KeyError) as err:
            raise ModelCardError(f"{where}: malformed ({type(err).__name__}: {err})") from None

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        """Read and check a card; raise ModelCardError naming the file on any problem."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ModelCardError(f"model card {path}: cannot be read ({err})") from None
        if not isinstance(data, dict):
            raise ModelCardError(f"model card {path}: not a JSON object")
        return cls.from_dict(data, path)
