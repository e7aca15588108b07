"""Typed run configuration (dataset, model, training, measurement) loaded from YAML.

Validation errors become one-line `KcapError`s naming the field (``training.lr: ...``), and
``--set a.b=value`` overrides are applied to the raw mapping before validation.
"""

from __future__ import annotations

import hashlib
import json
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

    Kinds: ``bios`` and ``biod`` (``n`` people; bioD also ``k, c, d, l, t``); ``junk`` (useful
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

    @model_validator(mode="after")
    def _complete(self) -> DatasetSpec:
        biod = (self.k, self.c, self.d, self.l, self.t)
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
)


class ModelSpec(_Strict):
    preset: str = "gpt2-2-2"
    overrides: dict[str, Any] = Field(default_factory=dict)

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
        """Leave ``log`` out of the dump while it is the default: configs written before it
        existed keep their hash."""
        data = handler(self)
        if data.get("log") == list(DEFAULT_LOG):
            data.pop("log")
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


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML scalars) to a nested mapping."""
    for item in overrides:
        if "=" not in item:
            raise KcapError("--set", f"expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise KcapError("--set", f"{key} does not name a config section")
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def parse_config(raw: dict) -> RunConfig:
    """Validate a raw mapping, turning the first pydantic error into a one-line KcapError."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "literal_error":
            msg = f"must be one of {err['ctx']['expected']}; got {err['input']!r}"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        raise KcapError(field, msg) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise KcapError("CONFIG", f"no such file: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise KcapError("CONFIG", f"{path} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise KcapError("CONFIG", f"{path} must hold a mapping of sections")
    return parse_config(apply_overrides(raw, overrides or []))
