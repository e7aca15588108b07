"""ModelConfig: the single switchboard that fully describes a decoder, plus named presets.

Every architectural choice of SPEC §5 is one field here; `GPT` is built from a `ModelConfig`
alone. Presets (`gpt2-L-H`, `llama-L-H`, `mistral-L-H`, each optionally suffixed `-moeE` for a
mixture of E experts in every block) are parsed by `preset`, which applies keyword overrides on
top and validates the result.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

PRESET_FORMS = (
    "gpt2-L-H, llama-L-H or mistral-L-H, optionally suffixed -moeE for E experts "
    "(L layers >= 1, H heads >= 1, E >= 1; e.g. gpt2-12-12, gpt2-2-2-moe32)"
)
_PRESET_RE = re.compile(r"^(gpt2|llama|mistral)-([1-9]\d*)-([1-9]\d*)(?:-moe([1-9]\d*))?$")


class ModelConfig(BaseModel):
    """Hyper-parameters of one decoder-only transformer (no dropout, rotary positions)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_layer: int = Field(ge=1)
    n_head: int = Field(ge=1)
    d_model: int = Field(default=0, ge=0, validate_default=True)  # 0 -> 64 * n_head
    vocab_size: int = Field(ge=2)
    context: int = Field(default=512, ge=1)
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_bias: bool = True  # LayerNorm only; RMSNorm never has a bias
    norm_eps: float = Field(default=1e-5, gt=0)
    mlp_ratio: float = Field(default=4.0, ge=0)  # 0 = no MLP at all; 1 = GPT2-1/4 (d->d->d)
    mlp_gated: bool = False
    mlp_hidden: int | None = Field(default=None, ge=0)  # explicit hidden size, beats mlp_ratio
    activation: Literal["gelu", "silu"] = "gelu"
    bias: bool = True  # biases of every linear layer except the head
    tied: bool = True
    rotary_fraction: float = Field(default=0.25, gt=0, le=1)
    # A head rotates at least this many dims (all of them if it is narrower): 16 keeps the paper's
    # GPT2 positional code (16 of its 64-dim heads) in the lab's 8-16-dim heads, where a quarter
    # is one frequency (configs/README.md, step 12). Even; the default 2 is one frequency.
    rotary_min_dims: int = Field(default=2, ge=2)
    rope_base: float = Field(default=10000.0, gt=0)
    n_kv_head: int | None = Field(default=None, ge=1)  # None = n_head (plain multi-head)
    init_std: float = Field(default=0.02, gt=0)
    # Mixture of experts (0 experts = dense). Each expert is an MLP d -> expert_hidden -> d that
    # follows `activation`, `mlp_gated` and `bias`; a linear router (no bias) picks top_k experts.
    n_experts: int = Field(default=0, ge=0)
    top_k: int = Field(default=1, ge=1, le=2)
    # Expert capacity in training mode only (<= 0: no limit). Eval mode never has a capacity
    # limit, so the measure drops no token and a token's output does not depend on its batch.
    capacity_factor_train: float = 2.0
    aux_loss_coef: float = Field(default=0.01, ge=0)
    expert_hidden_ratio: float = Field(default=1.0, gt=0)  # expert hidden = round(ratio * d)

    @model_validator(mode="before")
    @classmethod
    def _drop_retired_keys(cls, data: object) -> object:
        """Accept and ignore `capacity_factor_eval`, which saved configs and run overrides may
        still carry: evaluation no longer has a capacity limit, whatever the value was."""
        if isinstance(data, dict) and "capacity_factor_eval" in data:
            data = {k: v for k, v in data.items() if k != "capacity_factor_eval"}
        return data

    @field_validator("d_model")
    @classmethod
    def _default_width(cls, v: int, info: ValidationInfo) -> int:
        if v == 0 and "n_head" in info.data:
            return 64 * info.data["n_head"]
        return v

    @field_validator("rotary_min_dims")
    @classmethod
    def _even_rotary(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"rotary_min_dims={v} must be even (dims rotate in pairs)")
        return v

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelConfig:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.head_dim < 2:
            raise ValueError(f"head_dim={self.head_dim} must be at least 2 for rotary embedding")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_kv_head={self.n_kv_head} must divide n_head={self.n_head}")
        if self.n_experts and self.top_k > self.n_experts:
            raise ValueError(f"top_k={self.top_k} exceeds n_experts={self.n_experts}")
        if self.n_experts and self.expert_hidden < 1:
            raise ValueError(
                f"expert_hidden_ratio={self.expert_hidden_ratio} gives no hidden units"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (grouped-query attention when < n_head)."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def hidden(self) -> int:
        """MLP hidden width; 0 means the blocks have no MLP."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        return round(self.mlp_ratio * self.d_model)

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def expert_hidden(self) -> int:
        """Hidden width of each expert (mixture-of-experts models only)."""
        return round(self.expert_hidden_ratio * self.d_model)

    @property
    def has_mlp(self) -> bool:
        """Whether blocks have an MLP (dense, or a mixture of experts when n_experts > 0)."""
        return self.is_moe or self.hidden > 0

    @property
    def rotary_dims(self) -> int:
        """Rotated dims per head: head_dim * rotary_fraction rounded down to even, at least
        `rotary_min_dims`, at most the head (rounded down to even)."""
        share = int(self.head_dim * self.rotary_fraction) // 2 * 2
        return min(self.head_dim // 2 * 2, max(self.rotary_min_dims, share))


def preset(name: str, vocab_size: int, **overrides: object) -> ModelConfig:
    """Build the named preset (`gpt2-L-H`, `llama-L-H`, `mistral-L-H`, optionally `-moeE`: every
    MLP becomes E top-1 experts of width d), then apply overrides."""
    m = _PRESET_RE.match(name)
    if m is None:
        raise ValueError(f"unknown model preset {name!r}; expected {PRESET_FORMS}")
    family, n_layer, n_head = m.group(1), int(m.group(2)), int(m.group(3))
    base: dict[str, object] = dict(n_layer=n_layer, n_head=n_head, vocab_size=vocab_size)
    if m.group(4) is not None:
        base |= dict(n_experts=int(m.group(4)), top_k=1)
    if family == "gpt2":
        base |= dict(
            norm="layernorm",
            norm_bias=True,
            mlp_ratio=4.0,
            mlp_gated=False,
            activation="gelu",
            bias=True,
            tied=True,
            rotary_fraction=0.25,
        )
    else:
        base |= dict(
            norm="rmsnorm",
            norm_bias=False,
            mlp_gated=True,
            activation="silu",
            bias=False,
            tied=False,
            rotary_fraction=1.0,
        )
        if family == "llama":
            base["mlp_ratio"] = 8 / 3  # hidden = round(8 * d / 3)
        else:
            base["mlp_ratio"] = 3.5
            base["n_kv_head"] = (
                n_head // 4 if n_head % 4 == 0 else n_head // 2 if n_head % 2 == 0 else n_head
            )
    return ModelConfig(**(base | overrides))
