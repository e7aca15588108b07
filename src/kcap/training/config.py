"""Typed run configuration (dataset, model, training, measurement) loaded from YAML.

Validation errors become one-line `KcapError`s naming the field and what it allows
(``training.lr: must be > 0; got -1``; an unknown key gets a did-you-mean and the allowed keys),
invalid YAML names its file and line, and ``--set a.b=value`` overrides are checked against the
schema, then applied to the raw mapping before validation.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from kcap.errors import KcapError


def config_hash(config: dict) -> str:
    """A stable 16-hex-char id of a config mapping (independent of key order): a run's id is the
    hash of its full config, so a sweep recognises a run it has already done."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    """Either ``path`` to an existing dataset directory, or how to generate one for the run.

    Kinds: ``bios`` and ``biod`` (``n`` people; bioD also ``k, c, d, l, t`` and optionally
    ``name_pool``, the name pools cut to their first entries); ``junk`` (useful
    bioS(``n``), or with ``useful: biod`` bioD(``n, k, c, d, l, t``), with ``ratio`` junk tokens
    per useful token, ``junk`` random or repetitive, ``domain`` none/useful/junk); ``random``
    (``m`` strings of ``s`` symbols over ``v``);
    ``bior`` (``n`` people rewritten ``rewrites`` times by the local HF LM at ``rewriter``).
    Fields of the later kinds are left out of the dump while unset, so configs written before
    they existed keep their hash.
    """

    path: str | None = None
    kind: Literal["bios", "biod", "junk", "random", "bior"] = "bios"
    n: int | None = Field(default=None, ge=1)
    seed: int = 0
    variant: Literal["online", "simple", "fullname"] = "online"
    k: int | None = Field(default=None, ge=1)
    c: int | None = Field(default=None, ge=1)
    d: int | None = Field(default=None, ge=1)
    l: int | None = Field(default=None, ge=1)  # noqa: E741
    t: int | None = Field(default=None, ge=2)
    vocab: int = Field(default=2048, ge=300)
    tokenizer: Literal["bpe", "word"] = "bpe"
    ratio: int | None = Field(default=None, ge=1)
    junk: Literal["random", "repetitive"] | None = None
    junk_n: int | None = Field(default=None, ge=1)
    domain: Literal["none", "useful", "junk"] | None = None
    useful: Literal["bios", "biod"] | None = None  # junk only; None: bios
    m: int | None = Field(default=None, ge=1)
    s: int | None = Field(default=None, ge=1)
    v: int | None = Field(default=None, ge=2)
    rewriter: str | None = None
    rewrites: int | None = Field(default=None, ge=1)
    name_pool: int | None = Field(default=None, ge=1)  # biod only: `BioDParams.name_pool`

    @model_validator(mode="after")
    def _complete(self) -> DatasetSpec:
        biod = (self.k, self.c, self.d, self.l, self.t)
        if self.name_pool is not None and self.kind != "biod":
            raise ValueError("dataset.name_pool is only for bioD (kind: biod)")
        if self.useful is not None and self.kind != "junk":
            raise ValueError("dataset.useful is only for junk mixtures (kind: junk)")
        if self.kind == "junk" and self.useful != "biod" and biod != (None,) * 5:
            raise ValueError("dataset.k, .c, .d, .l, .t of a junk mixture need useful: biod")
        if self.path is None:
            if self.kind == "random":
                if self.m is None:
                    raise ValueError("random strings need dataset.m (and optionally .s, .v)")
                return self
            if self.n is None:
                raise ValueError("give either dataset.path or dataset.n (to generate bioS/bioD)")
            if self.kind == "biod" and None in biod:
                raise ValueError("bioD needs dataset.k, .c, .d, .l and .t")
            if self.useful == "biod" and None in biod:
                raise ValueError("a bioD junk mixture needs dataset.k, .c, .d, .l and .t")
            if self.kind == "junk" and None in (self.ratio, self.junk):
                raise ValueError("a junk mixture needs dataset.ratio and dataset.junk")
            if self.kind == "bior" and self.rewriter is None:
                raise ValueError("bioR needs dataset.rewriter (a local Hugging Face model path)")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        data = handler(self)
        for key in _LATER_FIELDS:
            if data.get(key) is None:
                data.pop(key, None)
        return data


#: DatasetSpec fields added after the first release, dumped only when set (stable run hashes).
_LATER_FIELDS = (
    "ratio",
    "junk",
    "junk_n",
    "domain",
    "useful",
    "m",
    "s",
    "v",
    "rewriter",
    "rewrites",
    "name_pool",
)


class ModelSpec(_Strict):
    preset: str = "gpt2-2-2"
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("overrides")
    @classmethod
    def _known_overrides(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        """Every key a `ModelConfig` field; ``vocab_size`` is the dataset tokenizer's."""
        if "vocab_size" in overrides:
            raise ValueError(
                "vocab_size cannot be overridden: the model's vocabulary is the dataset "
                f"tokenizer's (got vocab_size={overrides['vocab_size']!r}); remove it"
            )
        for key in overrides:
            if key not in override_keys():
                raise ValueError(f"unknown key {key!r}{did_you_mean(key, override_keys())}")
        return overrides

    @model_validator(mode="after")
    def _buildable(self) -> ModelSpec:
        """Fail at load time (before anything is written) if the preset cannot be built."""
        from kcap.models import preset

        preset(self.preset, 1024, **self.overrides)  # ValueError -> a one-line config error
        return self


class TrainingSpec(_Strict):
    exposures: int = Field(default=100, ge=1)
    batch_size: int = Field(default=8, ge=1)
    window: int = Field(default=512, ge=8)
    lr: float = Field(default=1e-3, gt=0)
    warmup_steps: int | None = Field(default=None, ge=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    schedule: Literal["cosine", "wsd"] = Field(
        default="cosine",
        description="after warmup: cosine down to min_lr_ratio x lr, or warmup-stable-decay "
        "(the peak held, then a linear decay to min_lr_ratio x lr over the last decay_fraction "
        "of the steps)",
    )
    decay_fraction: float = Field(
        default=0.2, gt=0, le=1, description="wsd only: the share of steps spent decaying"
    )
    weight_decay: float = Field(default=0.1, ge=0)
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip: float = Field(default=1.0, ge=0)
    seed: int = 0
    checkpoint_every: int = Field(default=1000, ge=1)
    log_every: int = Field(default=10, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    compile: bool = False
    threads: int | None = Field(default=None, ge=1)
    loader_workers: int = Field(
        default=0,
        ge=0,
        description="processes that render the stream's blocks ahead (0: in the trainer's "
        "process); the windows are the same either way",
    )
    on_nan: Literal["stop", "skip", "restart"] = Field(
        default="stop",
        description="a non-finite loss or gradient: stop the run, skip the step, or restart "
        "from the last checkpoint at half the learning rate (at most twice)",
    )
    log: list[Literal["jsonl", "tensorboard"]] = Field(
        default_factory=lambda: list(DEFAULT_LOG),
        description="where the trainer logs: metrics.jsonl always, and TensorBoard scalars",
    )

    @field_validator("log")
    @classmethod
    def _keeps_jsonl(cls, log: list[str]) -> list[str]:
        if "jsonl" not in log:
            raise ValueError("must include jsonl (kcap report reads RUN_DIR/metrics.jsonl)")
        return log

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        """Leave ``log``, ``on_nan``, ``loader_workers``, ``schedule`` and ``decay_fraction``
        out of the dump while they are the defaults: configs written before they existed keep
        their hash."""
        data = handler(self)
        if data.get("schedule") == "cosine":
            data.pop("schedule")
        if data.get("decay_fraction") == 0.2:
            data.pop("decay_fraction")
        if data.get("log") == list(DEFAULT_LOG):
            data.pop("log")
        if data.get("on_nan") == "stop":
            data.pop("on_nan")
        if data.get("loader_workers") == 0:  # how the stream is fed, not what it holds
            data.pop("loader_workers")
        return data


#: The default ``training.log``: the JSON-lines metrics file alone.
DEFAULT_LOG = ("jsonl",)


class MeasurementSpec(_Strict):
    every: int = Field(
        default=0, ge=0, description="measure every M steps during training (0: end only)"
    )
    eval_seed: int = 12345
    max_people: int | None = Field(default=None, ge=1, description="people measured (None: all)")
    during_max_people: int = Field(default=500, ge=1, description="people per in-training measure")
    batch_size: int = Field(default=64, ge=1)


class RunConfig(_Strict):
    name: str = "run"
    dataset: DatasetSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    measurement: MeasurementSpec = Field(default_factory=MeasurementSpec)


# ------------------------------------------------------------------------------ errors


def did_you_mean(key: str, allowed: typing.Iterable[str]) -> str:
    """``"; did you mean 'lr'? (allowed: a, b, ...)"``: the closest allowed keys, then all."""
    allowed = sorted(allowed)
    if not allowed:
        return ""
    close = difflib.get_close_matches(key, allowed, n=2, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"{hint} (allowed: {', '.join(allowed)})"


def override_keys() -> set[str]:
    """The keys ``model.overrides`` accepts: the `ModelConfig` fields but the vocabulary (and
    ``capacity_factor_eval``, retired but still accepted from saved configs)."""
    from kcap.models.config import ModelConfig

    return (set(ModelConfig.model_fields) - {"vocab_size"}) | {"capacity_factor_eval"}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}
_BOUNDS |= {"less_than_equal": "<="}
_TYPES = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def _fields_at(model: type[BaseModel] | None, loc: tuple) -> type[BaseModel] | None:
    """The pydantic model the location ``loc`` (of field names) leads to from ``model``."""
    for part in loc:
        if model is None or part not in model.model_fields:
            return None
        model = model_in(model.model_fields[part].annotation)
    return model


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model class inside a field annotation (``X | None``, ...), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def validation_error(e: ValidationError, root: type[BaseModel]) -> KcapError:
    """The first error of ``e`` (validating ``root``) as a one-line `KcapError`: the field's
    dotted path and what it allows, with the value given."""
    err = e.errors()[0]
    loc = tuple(str(p) for p in err["loc"])
    if (
        root is RunConfig
        and loc[:1] == ("model",)
        and loc[1:2]
        and loc[1] not in ModelSpec.model_fields
    ):
        loc = ("model", "overrides", *loc[1:])  # a ModelConfig error raised by the preset
    field = ".".join(loc) or "config"
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        parent = _fields_at(root, loc[:-1])
        if loc[:2] == ("model", "overrides"):
            allowed: typing.Iterable[str] = override_keys()
        else:
            allowed = parent.model_fields if parent is not None else ()
        msg = f"unknown key{did_you_mean(loc[-1], allowed)}"
    elif kind == "literal_error":
        msg = f"must be one of {ctx['expected']}; got {_short(value)}"
    elif kind in _BOUNDS:
        bound = next(v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le"))
        msg = f"must be {_BOUNDS[kind]} {bound}; got {_short(value)}"
    elif kind in _TYPES:
        msg = f"must be {_TYPES[kind]}; got {_short(value)}"
    elif kind == "missing":
        msg = "is required"
    else:
        msg = err["msg"].removeprefix("Value error, ")
    return KcapError(field, " ".join(msg.split()))


def yaml_error(path: Path, e: yaml.YAMLError) -> str:
    """``PATH line L, column C: what is wrong``: one line for invalid YAML."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{path}{where}: not valid YAML ({what})"


# ------------------------------------------------------------------------------ loading


def _check_key(key: str) -> None:
    """Refuse a ``--set`` key the schema does not have (with a did-you-mean)."""
    model: type[BaseModel] | None = RunConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[:i])
        if model is None:
            if where == "model.overrides" and part == "vocab_size":
                raise KcapError("--set", f"{key}: the model's vocabulary is the dataset's")
            if where == "model.overrides" and part not in override_keys():
                raise KcapError("--set", f"{key}: unknown key{did_you_mean(part, override_keys())}")
            if where != "model.overrides" or i < len(parts) - 1:
                raise KcapError("--set", f"{key}: {where} is not a config section")
            return
        if part not in model.model_fields:
            raise KcapError(
                "--set",
                f"{key}: unknown key {part!r}{' in ' + where if where else ''}"
                f"{did_you_mean(part, model.model_fields)}",
            )
        model = model_in(model.model_fields[part].annotation)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML scalars) to a nested mapping;
    a key that is not in the run config schema is refused."""
    for item in overrides:
        if "=" not in item:
            raise KcapError("--set", f"expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        _check_key(key)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            raise KcapError("--set", f"{key}: value {value!r} is not valid YAML") from None
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise KcapError("--set", f"{key}: {part} is not a mapping in this config")
        node[parts[-1]] = parsed
    return raw


def parse_config(raw: dict) -> RunConfig:
    """Validate a raw mapping, turning the first pydantic error into a one-line KcapError."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise validation_error(e, RunConfig) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise KcapError("CONFIG", f"no such file: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise KcapError("CONFIG", yaml_error(path, e)) from None
    if not isinstance(raw, dict):
        raise KcapError("CONFIG", f"{path} must hold a mapping of sections")
    return parse_config(apply_overrides(raw, overrides or []))
