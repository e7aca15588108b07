"""Sweep grids: a base run config plus `product` / `zip` blocks of dotted keys, expanded into runs.

A grid file (YAML)::

    name: law-lab                 # optional; the file's stem by default
    description: free text        # optional; also `result:` and `scale:` (informational)
    needs: [dataset.junk]         # optional: config fields this grid requires (see below)
    base: ../base.yaml            # a run config: a path (relative to this file) or a mapping,
                                  #   or a list of them merged in order (see below)
    set:                          # optional fixed overrides of the base
      training.exposures: 1000
    product:                      # every combination of these values ...
      dataset.n: [100, 200, 400]
      training.seed: [0, 1]
    zip:                          # ... times each zip group, whose lists advance together
      model.preset: [gpt2-2-1, gpt2-4-1]
      model.overrides.d_model: [32, 48]
    blocks:                       # optional: a union of sub-grids, each with its own
      - set: {...}                #   set / product / zip (combined with the top-level ones)
        product: {...}            #   and optional needs (an unmet block is skipped)
      - "@more-blocks.yaml"       #   or "@PATH": the blocks listed in that YAML file

A list ``base`` is a stack of layers, each a path or a mapping, merged in order: a mapping
merges into the layers below it key by key, any other value replaces. Recipes share their
scale's settings this way (``base: [shared/lab.yaml, {training: {exposures: 1000}}]``) and
``--set`` still overrides the merged base.

`zip` is one group (a mapping) or a list of groups. A key may name a whole section
(``model: "@../ablations/01-llama.yaml"``: a value ``@PATH`` is read from that YAML file);
shallower keys are applied first, so ``model.preset`` then overrides that file's preset.

Every point becomes a validated `RunConfig` whose ``name`` is derived from the rest of the
config (``bios-n300-gpt2-2-1-d32-e1000-3fa2c1``), so a run's id -- ``config_hash`` of its full
config, the id `kcap train` records too -- depends only on what the run does. Identical points are
kept once.

``needs`` lists config fields (``dataset.junk``) or field values (``dataset.kind=bior``) that
this kcap must support: a grid whose needs are unmet is refused with a one-line error naming
them, a block whose needs are unmet is skipped with a warning. Recipes for features that have
not landed yet stay runnable the day they land.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kcap.errors import KcapError
from kcap.training.config import (
    RunConfig,
    apply_overrides,
    config_hash,
    did_you_mean,
    model_in,
    parse_config,
    yaml_error,
)

__all__ = [
    "Grid",
    "GridPoint",
    "dataset_key",
    "expand",
    "load_grid",
    "parse_grid",
    "run_name",
    "select",
]

_TOP_KEYS = {"name", "description", "result", "scale", "needs", "base", "set", "product", "zip"}
_TOP_KEYS |= {"blocks"}
_BLOCK_KEYS = {"name", "needs", "set", "product", "zip"}


@dataclass
class GridPoint:
    """One run of a sweep: its validated config, id, and the grid coordinates that made it."""

    config: RunConfig
    run_id: str
    coords: dict[str, Any]

    @property
    def name(self) -> str:
        return self.config.name


@dataclass
class Grid:
    """A parsed grid file; `expand` turns it into `GridPoint`s."""

    name: str
    base: dict
    blocks: list[dict]
    description: str = ""
    result: int | None = None
    scale: str | None = None
    root: Path = field(default_factory=Path.cwd)
    skipped: list[str] = field(default_factory=list)  # blocks skipped for unmet needs


# ------------------------------------------------------------------------------ loading


def load_grid(path: str | Path, overrides: list[str] | None = None) -> Grid:
    """Read a grid file; ``overrides`` (``key.sub=value``) apply to its base config."""
    path = Path(path)
    if not path.is_file():
        raise KcapError("GRID", f"no such file: {path}")
    raw = _read_yaml(path, "GRID")
    if not isinstance(raw, dict):
        raise KcapError("GRID", f"{path} must hold a mapping (base, product, zip, ...)")
    raw.setdefault("name", path.stem)
    return parse_grid(raw, root=path.parent, overrides=overrides)


def parse_grid(raw: dict, *, root: str | Path = ".", overrides: list[str] | None = None) -> Grid:
    """Validate the structure of a grid mapping (values are validated when expanded)."""
    root = Path(root)
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise KcapError("grid", f"unknown keys {unknown}{did_you_mean(unknown[0], _TOP_KEYS)}")
    missing = _unmet(raw.get("needs", []), "needs")
    if missing:
        raise KcapError(
            "grid.needs",
            f"this grid needs {', '.join(missing)}, which this kcap does not support yet",
        )
    base = apply_overrides(_base(raw.get("base", {}), root), overrides or [])
    top = {key: raw.get(key) for key in ("set", "product", "zip")}
    blocks_raw = _blocks([{}] if raw.get("blocks") is None else raw["blocks"], root)
    if not blocks_raw:
        raise KcapError("grid.blocks", "the grid expands to zero runs: its block list is empty")
    blocks, skipped = [], []
    for i, block in enumerate(blocks_raw):
        where = f"grid.blocks[{i}]"
        if not isinstance(block, dict):
            raise KcapError(where, f"must be a mapping with keys among {sorted(_BLOCK_KEYS)}")
        unknown = sorted(set(block) - _BLOCK_KEYS)
        if unknown:
            raise KcapError(where, f"unknown keys {unknown}{did_you_mean(unknown[0], _BLOCK_KEYS)}")
        unmet = _unmet(block.get("needs", []), f"{where}.needs")
        if unmet:
            skipped.append(f"{block.get('name', where)} (needs {', '.join(unmet)})")
            continue
        blocks.append(
            {
                "set": {**_mapping(top["set"], "grid.set"), **_mapping(block.get("set"), where)},
                "product": {
                    **_mapping(top["product"], "grid.product"),
                    **_mapping(block.get("product"), f"{where}.product"),
                },
                "zip": _zip_groups(top["zip"], "grid.zip")
                + _zip_groups(block.get("zip"), f"{where}.zip"),
            }
        )
    if not blocks:
        raise KcapError(
            "grid.blocks",
            f"the grid expands to zero runs: every block was skipped: {'; '.join(skipped)}",
        )
    for block in blocks:
        for key, values in block["product"].items():
            if not isinstance(values, list) or not values:
                raise KcapError(f"grid.product.{key}", "must be a non-empty list of values")
    return Grid(
        name=str(raw["name"]) if raw.get("name") else "sweep",
        base=base,
        blocks=blocks,
        description=str(raw.get("description") or ""),
        result=raw.get("result"),
        scale=raw.get("scale"),
        root=root,
        skipped=skipped,
    )


def _base(value: Any, root: Path) -> dict:
    """The base run config: a mapping, a path to one, or a list of them merged in order."""
    merged: dict = {}
    for i, layer in enumerate(value if isinstance(value, list) else [value]):
        where = f"grid.base[{i}]" if isinstance(value, list) else "grid.base"
        if isinstance(layer, str):
            layer = _read_yaml(root / layer, where)
        if not isinstance(layer, dict):
            raise KcapError(where, "must be a run config mapping or a path to one")
        merged = _merge(merged, layer)
    return merged


def _merge(below: dict, above: dict) -> dict:
    """``above`` over ``below``: mappings merge key by key, any other value replaces."""
    out = copy.deepcopy(below)
    for key, value in above.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _blocks(value: Any, root: Path) -> list:
    """The block list, each ``@PATH`` entry replaced by the blocks listed in that file."""
    if not isinstance(value, list):
        raise KcapError("grid.blocks", "must be a list of {set, product, zip} mappings")
    out: list = []
    for i, block in enumerate(value):
        if _from_file(block):
            listed = _read_yaml(root / block[1:], f"grid.blocks[{i}]")
            if not isinstance(listed, list) or not all(isinstance(b, dict) for b in listed):
                raise KcapError(f"grid.blocks[{i}]", f"{block[1:]} must hold a list of blocks")
            out += listed
        else:
            out.append(block)
    return out


def _read_yaml(path: Path, field_name: str) -> Any:
    if not path.is_file():
        raise KcapError(field_name, f"no such file: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise KcapError(field_name, yaml_error(path, e)) from None


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise KcapError(where, "must be a mapping of dotted keys to values")
    return dict(value)


def _zip_groups(value: Any, where: str) -> list[dict]:
    if value is None:
        return []
    groups = value if isinstance(value, list) else [value]
    out = []
    for i, group in enumerate(groups):
        w = f"{where}[{i}]" if isinstance(value, list) else where
        if not isinstance(group, dict) or not group:
            raise KcapError(w, "must be a mapping of dotted keys to equal-length lists")
        lengths = {k: len(v) if isinstance(v, list) else -1 for k, v in group.items()}
        if -1 in lengths.values() or len(set(lengths.values())) != 1 or 0 in lengths.values():
            raise KcapError(w, f"zipped keys need non-empty lists of equal length; got {lengths}")
        out.append(group)
    return out


# ------------------------------------------------------------------------------ needs


def _unmet(needs: Any, where: str) -> list[str]:
    """The entries of ``needs`` that the RunConfig schema does not support."""
    if isinstance(needs, str):
        needs = [needs]
    if not isinstance(needs, list):
        raise KcapError(where, "must be a list of config fields (dataset.junk, dataset.kind=bior)")
    return [need for need in needs if not _supported(str(need))]


def _supported(need: str) -> bool:
    path, _, value = need.partition("=")
    model: type[BaseModel] | None = RunConfig
    annotation: Any = None
    for part in path.strip().split("."):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = model_in(annotation)
    if not value:
        return True
    return value.strip() in _literal_values(annotation)


def _literal_values(annotation: Any) -> set[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return {str(a) for a in typing.get_args(annotation)}
    out: set[str] = set()
    for arg in typing.get_args(annotation):
        out |= _literal_values(arg)
    return out


# ------------------------------------------------------------------------------ expansion


def expand(grid: Grid) -> list[GridPoint]:
    """Every point of every block, validated, in file order, duplicates removed."""
    points: list[GridPoint] = []
    seen: set[str] = set()
    for block in grid.blocks:
        axes: list[list[dict]] = [
            [{key: v} for v in values] for key, values in block["product"].items()
        ]
        for group in block["zip"]:
            keys = list(group)
            axes.append(
                [dict(zip(keys, vals, strict=True)) for vals in zip(*group.values(), strict=True)]
            )
        for combo in itertools.product(*axes):
            coords = {k: v for part in combo for k, v in part.items()}
            raw = copy.deepcopy(grid.base)
            for key, value in sorted(
                {**block["set"], **coords}.items(), key=lambda kv: kv[0].count(".")
            ):
                _set_dotted(raw, key, value, grid.root)
            cfg = _validate(raw, coords)
            run_id = _hash(cfg)
            if run_id not in seen:
                seen.add(run_id)
                points.append(GridPoint(cfg, run_id, coords))
    return points


def select(points: list[GridPoint], filters: list[str]) -> list[GridPoint]:
    """The points matching every filter (``kcap sweep --only``), in grid order.

    A filter is ``KEY=V1,V2,...`` (a dotted config key, e.g. ``dataset.n=1600,3200`` or
    ``model.overrides.d_model=32``: the run's value is one of those, read as YAML) or a glob over
    run names and ids (``*-d32+-*``). A filter that names no config key, or that leaves no point,
    is an error naming it."""
    out = list(points)
    for f in filters:
        key, eq, values = f.partition("=")
        if eq:
            tokens = [v.strip() for v in values.split(",")]
            found = [_dotted(p.config.model_dump(), key.strip()) for p in out]
            if all(v is _MISSING for v in found):
                raise KcapError("--only", f"{key.strip()!r} is not a run config key")
            out = [p for p, v in zip(out, found, strict=True) if _matches(v, tokens)]
        else:
            out = [p for p in out if fnmatch.fnmatch(p.name, f) or fnmatch.fnmatch(p.run_id, f)]
        if not out:
            raise KcapError("--only", f"{f!r} leaves no run of the grid")
    return out


_MISSING = object()


def _matches(value: Any, tokens: list[str]) -> bool:
    """Whether a config value equals one of ``--only``'s tokens (numbers compared as numbers)."""
    for token in tokens:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                if float(token) == float(value):
                    return True
            except ValueError:
                continue
        elif value is not _MISSING and (yaml.safe_load(token) == value or str(value) == token):
            return True
    return False


def _dotted(config: dict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _validate(raw: dict, coords: dict) -> RunConfig:
    raw = dict(raw)
    raw["name"] = "run"  # placeholder: the real name is derived from the validated config
    try:
        cfg = parse_config(raw)
    except KcapError as e:
        where = ", ".join(f"{k}={v}" for k, v in coords.items()) or "the base config"
        raise KcapError(e.field, f"{str(e).split(': ', 1)[1]} (at {where})") from None
    return cfg.model_copy(update={"name": run_name(cfg)})


def _from_file(value: Any) -> bool:
    """Whether a grid value is ``@PATH``, a section read from that YAML file."""
    return isinstance(value, str) and value.startswith("@")


def _resolve(value: Any, root: Path) -> Any:
    if _from_file(value):
        return _read_yaml(root / value[1:], "grid")
    return copy.deepcopy(value)


def _set_dotted(raw: dict, key: str, value: Any, root: Path) -> None:
    """Set ``key`` in ``raw``: a mapping merges into the mapping there, as a base layer does (a
    zip row of ``model.overrides`` keeps the scale's overrides); ``@PATH`` and any other value
    replace it (a section read from a file is the whole section)."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise KcapError(f"grid.{key}", f"{part} is not a config section")
        node = nxt
    below, new = node.get(parts[-1]), _resolve(value, root)
    merge = isinstance(new, dict) and isinstance(below, dict) and not _from_file(value)
    node[parts[-1]] = _merge(below, new) if merge else new


def _hash(cfg: RunConfig) -> str:
    return config_hash(cfg.model_dump())


# ------------------------------------------------------------------------------ naming


def run_name(cfg: RunConfig) -> str:
    """A readable name that is a function of the config without its name (so of the run)."""
    body = cfg.model_dump()
    body.pop("name", None)
    d, m, t = cfg.dataset, cfg.model, cfg.training
    biod = f"biod-n{d.n}-k{d.k}c{d.c}d{d.d}l{d.l}t{d.t}"
    if d.path is not None:
        data = "data"
    elif d.kind == "bios":
        data = "bios" + ("" if d.variant == "online" else f"-{d.variant}") + f"-n{d.n}"
    elif d.kind == "biod":
        data = biod
    elif d.kind == "junk":
        marker = "" if d.domain in (None, "none") else f"-{d.domain}-token"
        useful = biod if d.useful == "biod" else f"bios-n{d.n}"
        people = f"{d.junk_n}" if d.junk_n else ""  # repetitive junk of junk_n people
        data = f"junk-{d.junk}{people}-r{d.ratio}{marker}-{useful}"
    elif d.kind == "bior":
        data = f"bior-n{d.n}-w{d.rewrites}"
    else:
        data = f"random-m{d.m}-s{d.s}-v{d.v}"
    width = m.overrides.get("d_model")
    model = (
        m.preset + (f"-d{width}" if width else "") + ("+" if set(m.overrides) - {"d_model"} else "")
    )
    return f"{data}-{model}-e{t.exposures}-{config_hash(body)[:6]}"


def dataset_key(cfg: RunConfig) -> str | None:
    """The id of a generated dataset (runs with equal keys share it); None for ``dataset.path``."""
    if cfg.dataset.path is not None:
        return None
    return config_hash(cfg.dataset.model_dump(exclude={"path"}))
