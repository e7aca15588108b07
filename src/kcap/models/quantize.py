"""Post-training, weight-only quantization of a kcap `GPT` (SPEC §1 `kcap quantize`, paper §8).

What is quantized: the weight matrix of every `nn.Linear` inside the transformer blocks (the
attention ``qkv`` and ``proj``, the MLP ``fc``/``proj`` or ``gate``/``up``/``down``), and the
stacked expert weights ``w_in``/``w_out`` of mixture-of-experts MLPs. What stays in full
precision, as is the GPTQ norm: the token embedding, the LM head (tied or not), every norm, every
bias, and the MoE router (a tiny matrix; auto_gptq leaves it unquantized too). Activations are
not quantized.

The quantization is *fake*: each weight is replaced by its dequantized value ``scale * (q -
zero)`` with an integer code ``q`` in ``[0, 2^bits - 1]``, stored as a float. That is what the
knowledge measure needs (the model's losses once its weights can take only 2^bits values per
channel or group); packing the codes into int tensors would change nothing measured.

The grid is min-max per output channel (``group_size=None``) or per group of ``group_size``
consecutive input columns of each channel, over ``[min(w, 0), max(w, 0)]`` so that zero is
always representable. Symmetric (``sym=True``, auto_gptq's default and so the paper's): the span
is widened to ``[-m, m]`` with ``m`` the largest magnitude and the zero point fixed at
``2^(bits-1)``, exactly as auto_gptq's ``Quantizer.find_params`` (a row with no negative weight
keeps ``[0, max]``, as there). Asymmetric (``sym=False``): the span is ``[min(w, 0), max(w, 0)]``
with a rounded zero point; it fits each row's range tighter, so it is the more forgiving grid.

Two methods:

- ``rtn``: round every weight to the nearest grid point (the baseline; needs no data).
- ``gptq`` (Frantar et al. 2022): layer by layer, sequentially. The inputs of each linear are
  collected on calibration batches with forward hooks, with every earlier linear already
  quantized (blocks in order; inside a block qkv, proj, then the MLP's linears). With
  H = 2 X Xᵀ / n (dampened by ``damp`` times its mean diagonal), the columns are quantized one by
  one and each rounding error is spread over the columns not yet quantized through the upper
  Cholesky factor of H⁻¹, in lazy blocks. ``act_order`` (auto_gptq's ``desc_act``, on by
  default there and here) visits columns by decreasing H diagonal (with groups, they are then
  fixed up front from the original weights: "static groups"). MoE experts are rounded with RTN
  even under GPTQ: their inputs depend on routing, and the per-expert Hessians would need the
  capacity-limited dispatch re-run by hand; such a quantization's label says so
  (``int4-gptq-rtn-experts``).

The defaults (symmetric grid, act-order, per channel, dampening 0.01) are auto_gptq's, which the
paper used (§8).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from kcap.models.gpt import GPT
from kcap.models.moe import MoEMLP

Method = Literal["gptq", "rtn"]
METHODS: tuple[str, ...] = ("gptq", "rtn")
#: What `quantize_model` leaves in full precision (for results' metadata).
FULL_PRECISION = ("embedding", "lm_head", "norms", "biases", "moe_router")
_MAX_DAMP_TRIES = 6


def quant_label(
    bits: int,
    method: str,
    group_size: int | None = None,
    *,
    sym: bool = True,
    act_order: bool = True,
    experts: str | None = None,
) -> str:
    """How runs and tables name a quantization: ``int4-gptq`` for the paper's settings, with
    what differs appended: ``-g128`` (groups), ``-asym`` (asymmetric grid), ``-noact`` (GPTQ
    without act-order), ``-rtn-experts`` (MoE experts rounded to nearest under GPTQ)."""
    parts = [f"int{bits}", method]
    parts += [f"g{group_size}"] if group_size else []
    parts += [] if sym else ["asym"]
    parts += ["noact"] if method == "gptq" and not act_order else []
    parts += [f"{experts}-experts"] if experts else []
    return "-".join(parts)


def quant_label_of(entry: dict) -> str:
    """The label of a recorded ``quantize`` entry (a run config's). Entries written before the
    grid was a choice have no ``sym``: their grid was asymmetric."""
    return quant_label(
        entry["bits"],
        entry.get("method", "gptq"),
        entry.get("group_size"),
        sym=entry.get("sym", False),
        act_order=entry.get("act_order", False),
        experts=entry.get("experts"),
    )


def has_experts(model: GPT) -> bool:
    """Whether ``model`` has mixture-of-experts MLPs."""
    return any(isinstance(block.mlp, MoEMLP) for block in model.blocks)


@dataclass
class LayerQuant:
    """The grid of one quantized weight, viewed as (..., out, in): ``scale`` and ``zero`` are
    (..., out, groups) (groups = 1 per channel); ``rel_error`` is ||(W - Q) X||² / ||W X||² on
    the calibration inputs (GPTQ only, else None)."""

    bits: int
    group_size: int | None
    scale: torch.Tensor
    zero: torch.Tensor
    rel_error: float | None = None


@dataclass
class QuantResult:
    """Dequantized weight (out, in) with its grid (see `LayerQuant`)."""

    weight: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor


# ------------------------------------------------------------------------------ the grid


def grid_params(w: torch.Tensor, bits: int, sym: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max grid of each row of w (..., cols), symmetric or not (module docstring): scale
    and integer zero point, each (..., 1)."""
    maxq = 2**bits - 1
    lo = w.amin(dim=-1, keepdim=True).clamp(max=0)
    hi = w.amax(dim=-1, keepdim=True).clamp(min=0)
    if sym:
        hi = torch.maximum(-lo, hi)
        lo = torch.where(lo < 0, -hi, lo)
    flat = hi == lo  # an all-zero row: any grid holds it; use [-1, 1]
    lo = torch.where(flat, -torch.ones_like(lo), lo)
    hi = torch.where(flat, torch.ones_like(hi), hi)
    scale = (hi - lo) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-lo / scale)
    return scale, zero


def fake_quant(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Round w to the grid (scale, zero) and return the dequantized values."""
    q = torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)
    return scale * (q - zero)


def grid_codes(w: torch.Tensor, lq: LayerQuant) -> torch.Tensor:
    """The (float) integer codes of a weight (..., out, in) on its grid: w / scale + zero."""
    cols = w.size(-1)
    size = lq.group_size or cols
    expand = torch.arange(cols, device=w.device) // size
    return w / lq.scale[..., expand] + lq.zero[..., expand]


def _group_bounds(cols: int, group_size: int | None) -> list[tuple[int, int]]:
    size = group_size or cols
    return [(a, min(a + size, cols)) for a in range(0, cols, size)]


def _static_grid(
    w: torch.Tensor, bits: int, group_size: int | None, sym: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid of each (row, group) of w (..., out, in) from w itself: (..., out, groups)."""
    bounds = _group_bounds(w.size(-1), group_size)
    parts = [grid_params(w[..., a:b], bits, sym) for a, b in bounds]
    return torch.cat([s for s, _ in parts], -1), torch.cat([z for _, z in parts], -1)


def rtn_quantize(
    w: torch.Tensor, bits: int, group_size: int | None = None, *, sym: bool = True
) -> QuantResult:
    """Round-to-nearest quantization of w (..., out, in) per channel or per group."""
    w = w.detach().float()
    scale, zero = _static_grid(w, bits, group_size, sym)
    q = torch.cat(
        [
            fake_quant(w[..., a:b], scale[..., g : g + 1], zero[..., g : g + 1], bits)
            for g, (a, b) in enumerate(_group_bounds(w.size(-1), group_size))
        ],
        -1,
    )
    return QuantResult(q, scale, zero)


# ------------------------------------------------------------------------------ GPTQ


def _inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)⁻¹; the dampening grows tenfold
    while H is not numerically positive definite."""
    eye = torch.eye(h.size(0), dtype=h.dtype, device=h.device)
    mean_diag = h.diagonal().mean().clamp(min=1e-12)
    for attempt in range(_MAX_DAMP_TRIES):
        chol, info = torch.linalg.cholesky_ex(h + damp * 10**attempt * mean_diag * eye)
        if int(info) == 0:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(chol), upper=True)
            if int(info) == 0:
                return upper
    raise RuntimeError("GPTQ: the Hessian is not positive definite even after dampening")


def gptq_quantize(
    w: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    *,
    group_size: int | None = None,
    damp: float = 0.01,
    act_order: bool = True,
    sym: bool = True,
    block_size: int = 128,
) -> QuantResult:
    """GPTQ of one weight w (out, in) given its inputs' Hessian (in, in), e.g. X Xᵀ.

    Columns are quantized in order (or by decreasing H diagonal with ``act_order``); after each,
    its scaled rounding error is subtracted from the remaining columns of the current block, and
    each finished block's errors from all later columns at once (lazy batch updates).
    """
    W = w.detach().float().clone()
    H = hessian.detach().float().clone()
    cols = W.size(1)
    # A per-channel grid is set from the weights as given; then, as in auto_gptq, the weights of
    # inputs never seen (no information to compensate with) are set to 0.
    channel_grid = _static_grid(W, bits, None, sym) if group_size is None else None
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0
    lazy_groups = group_size is not None and not act_order
    if lazy_groups:  # each group's grid is set when its first column comes up (below)
        scale = W.new_zeros(W.size(0), len(_group_bounds(cols, group_size)))
        zero = torch.zeros_like(scale)
        block_size = group_size  # a group starts a block: its grid sees every earlier update
    else:
        scale, zero = channel_grid or _static_grid(W, bits, group_size, sym)
    perm = torch.argsort(H.diagonal(), descending=True) if act_order else None
    if perm is not None:
        W, H = W[:, perm], H[perm][:, perm]
    column = list(range(cols)) if perm is None else perm.tolist()  # original index, on the host
    U = _inverse_cholesky(H, damp)
    Q = torch.zeros_like(W)
    size = group_size or cols
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        if lazy_groups:
            g = i1 // size
            s, z = grid_params(W[:, i1 : i1 + size], bits, sym)
            scale[:, g : g + 1], zero[:, g : g + 1] = s, z
        W1, E1, U1 = W[:, i1:i2].clone(), W.new_zeros(W.size(0), i2 - i1), U[i1:i2, i1:i2]
        for j in range(i2 - i1):
            g = column[i1 + j] // size
            q = fake_quant(W1[:, j], scale[:, g], zero[:, g], bits)
            Q[:, i1 + j] = q
            err = (W1[:, j] - q) / U1[j, j]
            W1[:, j:] -= err.unsqueeze(1) * U1[j, j:].unsqueeze(0)
            E1[:, j] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    return QuantResult(Q, scale, zero)


def relative_error(w: torch.Tensor, q: torch.Tensor, hessian: torch.Tensor) -> float:
    """||(W - Q) X||² / ||W X||² from H ∝ X Xᵀ (W, Q: (out, in))."""
    d = (w.float() - q.float()) @ hessian
    num = ((w.float() - q.float()) * d).sum()
    den = (w.float() @ hessian * w.float()).sum().clamp(min=1e-30)
    return float(num / den)


# ------------------------------------------------------------------------------ a whole model


class _Stop(Exception):
    """Raised by a hook to end a forward pass early."""


class _HessianHook:
    """Accumulates H = 2 X Xᵀ / n over the inputs a linear layer sees."""

    def __init__(self, features: int, device: torch.device):
        self.h = torch.zeros(features, features, device=device)
        self.n = 0

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        x = args[0].detach().reshape(-1, args[0].size(-1)).float()
        self.h += x.t() @ x
        self.n += x.size(0)

    def hessian(self) -> torch.Tensor:
        return 2 * self.h / max(self.n, 1)


def block_linears(block: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The linears of a block in data-flow order (qkv, proj, MLP), the MoE router excluded."""
    return [
        (name, m)
        for name, m in block.named_modules()
        if isinstance(m, nn.Linear) and not name.endswith("router")
    ]


def _block_inputs(model: GPT, calib: list[torch.Tensor]) -> list[tuple]:
    """The first block's arguments (hidden states, rotary cos, sin) for each calibration batch
    (batches may differ in length)."""
    seen: list[tuple] = []

    def grab(module: nn.Module, args: tuple) -> None:
        seen.append(args)
        raise _Stop

    handle = model.blocks[0].register_forward_pre_hook(grab)
    try:
        for x in calib:
            with contextlib.suppress(_Stop):
                model(x)
    finally:
        handle.remove()
    return seen


@dataclass(frozen=True)
class _Grid:
    """The grid every weight of one quantization uses."""

    bits: int
    group_size: int | None
    sym: bool


def _set_weight(param: torch.Tensor, value: torch.Tensor) -> None:
    param.data.copy_(value.to(param.dtype))


def _quantize_experts(moe: MoEMLP, prefix: str, grid: _Grid, record: dict | None) -> None:
    """RTN of the stacked expert weights, each expert's (out, in) view per output channel."""
    bits, group_size = grid.bits, grid.group_size
    for name in ("w_in", "w_out"):
        p = getattr(moe, name)  # (E, in, out): experts compute x @ w
        r = rtn_quantize(p.transpose(-1, -2), bits, group_size, sym=grid.sym)
        _set_weight(p, r.weight.transpose(-1, -2))
        if record is not None:
            record[f"{prefix}.{name}"] = LayerQuant(bits, group_size, r.scale, r.zero)


def _check(bits: int, method: str, group_size: int | None) -> None:
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8; got {bits}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if group_size is not None and group_size < 1:
        raise ValueError(f"group_size must be positive; got {group_size}")


@torch.no_grad()
def quantize_model(
    model: GPT,
    bits: int,
    *,
    method: Method = "gptq",
    group_size: int | None = None,
    calib: Iterable[torch.Tensor] | None = None,
    damp: float = 0.01,
    act_order: bool = True,
    sym: bool = True,
    record: dict[str, LayerQuant] | None = None,
) -> GPT:
    """Quantize ``model``'s transformer-block weights in place (see the module docstring).

    ``calib``: batches (B, T) of token ids, needed by GPTQ (T may differ between batches).
    ``act_order`` applies to GPTQ, ``sym`` to both methods. ``record``, when given, is filled
    with each quantized weight's grid (`LayerQuant`) under its parameter name without
    ``.weight`` (``blocks.0.attn.qkv``, ``blocks.0.mlp.w_in``). Returns ``model``.
    """
    _check(bits, method, group_size)
    grid = _Grid(bits, group_size, sym)
    was_training = model.training
    model.eval()
    try:
        if method == "rtn":
            _quantize_rtn(model, grid, record)
        else:
            device = model.wte.weight.device
            batches = [x.to(device) for x in calib or []]
            if not batches:
                raise ValueError("GPTQ needs calibration batches (calib)")
            _quantize_gptq(model, grid, batches, damp, act_order, record)
    finally:
        model.train(was_training)
    return model


def _quantize_rtn(model: GPT, grid: _Grid, record: dict[str, LayerQuant] | None) -> None:
    for i, block in enumerate(model.blocks):
        for name, lin in block_linears(block):
            r = rtn_quantize(lin.weight, grid.bits, grid.group_size, sym=grid.sym)
            _set_weight(lin.weight, r.weight)
            if record is not None:
                record[f"blocks.{i}.{name}"] = LayerQuant(
                    grid.bits, grid.group_size, r.scale, r.zero
                )
        if isinstance(block.mlp, MoEMLP):
            _quantize_experts(block.mlp, f"blocks.{i}.mlp", grid, record)


def _quantize_gptq(
    model: GPT,
    grid: _Grid,
    calib: list[torch.Tensor],
    damp: float,
    act_order: bool,
    record: dict[str, LayerQuant] | None,
) -> None:
    """Block by block; inside a block one linear at a time, each seeing the inputs that the
    already quantized layers before it produce."""
    inputs = _block_inputs(model, calib)  # (hidden, cos, sin) per batch
    for i, block in enumerate(model.blocks):
        for name, lin in block_linears(block):
            hook = _HessianHook(lin.in_features, lin.weight.device)
            handle = lin.register_forward_hook(hook)
            try:
                for args in inputs:
                    block(*args)
            finally:
                handle.remove()
            H = hook.hessian()
            r = gptq_quantize(
                lin.weight,
                H,
                grid.bits,
                group_size=grid.group_size,
                damp=damp,
                act_order=act_order,
                sym=grid.sym,
            )
            err = relative_error(lin.weight, r.weight, H)
            _set_weight(lin.weight, r.weight)
            if record is not None:
                record[f"blocks.{i}.{name}"] = LayerQuant(
                    grid.bits, grid.group_size, r.scale, r.zero, err
                )
        if isinstance(block.mlp, MoEMLP):
            _quantize_experts(block.mlp, f"blocks.{i}.mlp", grid, record)
        inputs = [(block(*args), *args[1:]) for args in inputs]
