"""Mixture-of-experts MLP (SPEC §5 `-moe`): top-k routing, training-time expert capacity, Switch
loss.

`MoEMLP` replaces a block's MLP when `ModelConfig.n_experts > 0`. A linear router (no bias)
gives softmax probabilities over E experts; each token picks its top-k experts (k = 1: the gate is
the raw probability, as in the Switch Transformer; k = 2: the two gates are renormalised to sum
to 1, as in Mixtral). In training mode each expert accepts at most

    capacity = ceil(capacity_factor_train * tokens * k / E)

token-slots (a factor <= 0 means no limit). Slots are served in priority order: every token's
first choice before any second choice, and in token order within a rank. A slot beyond its
expert's capacity is dropped: it contributes zero, so the residual stream carries that token
unchanged.

Eval mode (`not self.training`, which is how the knowledge measure runs) has no capacity limit
and never drops a slot. Then each token's output depends on that token alone, not on the other
tokens of the batch: a person's measured bits do not depend on who else shares the measuring
batch, and the <|eos|> right-padding of `kcap.measure.losses.token_losses` changes nobody's
result. (The only batch-wide quantity left in eval mode is the reported `aux_loss`.) This is
also Mixtral's rule, so an exported model matches ours in eval mode.

Dispatch is vectorised: slots are sorted by expert (stable), positions-in-expert come from the
cumulative expert counts, tokens are gathered into an [E, capacity, d] buffer, all experts run
as batched matmuls on stacked weights, and results are gathered back and combined with the
gates. `moe_loop_reference` is a plain loop over experts with the same rules, for tests and
benchmarks only.

After each forward the module holds `aux_loss`, the Switch load-balancing loss
E * sum_e f_e * P_e (f_e: fraction of tokens whose first choice is e; P_e: mean router
probability of e; its minimum 1 is reached by a uniform router), and `drop_fraction`, the
fraction of token-slots dropped for lack of capacity (always 0 in eval mode).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kcap.models.config import ModelConfig


def expert_capacity(capacity_factor: float, n_tokens: int, top_k: int, n_experts: int) -> int:
    """Slots per expert: ceil(capacity_factor * n_tokens * top_k / n_experts), at most n_tokens
    (an expert never gets the same token twice); n_tokens when capacity_factor <= 0 (no limit)."""
    if capacity_factor <= 0:
        return n_tokens
    return min(n_tokens, math.ceil(capacity_factor * n_tokens * top_k / n_experts))


def _counts(idx: torch.Tensor, n: int) -> torch.Tensor:
    """How often each of 0..n-1 occurs in idx (bincount with a static shape)."""
    return torch.zeros(n, dtype=torch.long, device=idx.device).scatter_add_(
        0, idx, torch.ones_like(idx)
    )


def balance_loss(probs: torch.Tensor, first_choice: torch.Tensor) -> torch.Tensor:
    """Switch load-balancing loss E * sum_e f_e * P_e for router probs (N, E) and first choices
    (N,); differentiable through P_e only. Equals 1 when routing is perfectly uniform."""
    n_tokens, n_experts = probs.shape
    f = _counts(first_choice, n_experts).to(probs.dtype) / n_tokens
    return n_experts * (f * probs.mean(0)).sum()


class MoEMLP(nn.Module):
    """E expert MLPs d -> h -> d (h = cfg.expert_hidden) behind a top-k router.

    Stacked expert weights: `w_in` (E, d, h), or (E, d, 2h) laid out [gate | up] when gated;
    `w_out` (E, h, d); biases `b_in`, `b_out` when `cfg.bias`. `router` is Linear(d, E) without
    bias.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, d, h = cfg.n_experts, cfg.d_model, cfg.expert_hidden
        self.n_experts, self.top_k, self.d_model, self.hidden = E, cfg.top_k, d, h
        self.gated = cfg.mlp_gated
        self.act = F.gelu if cfg.activation == "gelu" else F.silu
        self.capacity_factor_train = cfg.capacity_factor_train
        self.router = nn.Linear(d, E, bias=False)
        n_in = 2 * h if self.gated else h
        self.w_in = nn.Parameter(torch.empty(E, d, n_in))
        self.w_out = nn.Parameter(torch.empty(E, h, d))
        self.b_in = nn.Parameter(torch.zeros(E, n_in)) if cfg.bias else None
        self.b_out = nn.Parameter(torch.zeros(E, d)) if cfg.bias else None
        self.aux_loss: torch.Tensor | None = None
        self.drop_fraction: torch.Tensor | None = None
        self.reset_parameters(cfg.init_std)

    def reset_parameters(self, std: float) -> None:
        """N(0, std) expert weights, zero biases (GPT rescales `w_out` for the residual)."""
        nn.init.normal_(self.w_in, mean=0.0, std=std)
        nn.init.normal_(self.w_out, mean=0.0, std=std)
        for b in (self.b_in, self.b_out):
            if b is not None:
                nn.init.zeros_(b)

    @property
    def capacity_factor(self) -> float:
        """The capacity factor of the current mode: `capacity_factor_train` in training mode,
        0 (no limit) in eval mode, so evaluation never drops a token."""
        return self.capacity_factor_train if self.training else 0.0

    def params_per_expert(self) -> int:
        n = self.w_in[0].numel() + self.w_out[0].numel()
        if self.b_in is not None and self.b_out is not None:
            n += self.b_in[0].numel() + self.b_out[0].numel()
        return n

    def inactive_parameters(self) -> int:
        """Parameters a token does not use: the E - k experts it is not routed to."""
        return (self.n_experts - self.top_k) * self.params_per_expert()

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, d) -> float32 probs (N, E), gates (N, k), chosen experts (N, k), best first."""
        probs = self.router(x).float().softmax(dim=-1)
        top_p, top_e = probs.topk(self.top_k, dim=-1)
        gates = top_p / top_p.sum(dim=-1, keepdim=True) if self.top_k > 1 else top_p
        return probs, gates, top_e

    def experts(self, buf: torch.Tensor) -> torch.Tensor:
        """Run expert e on buf[e] for every e at once: (E, C, d) -> (E, C, d)."""
        if self.b_in is None:
            h = torch.bmm(buf, self.w_in)
        else:
            h = torch.baddbmm(self.b_in.unsqueeze(1), buf, self.w_in)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate) * up
        else:
            h = self.act(h)
        if self.b_out is None:
            return torch.bmm(h, self.w_out)
        return torch.baddbmm(self.b_out.unsqueeze(1), h, self.w_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        E, k, d = self.n_experts, self.top_k, self.d_model
        x2 = x.reshape(-1, d)
        N = x2.size(0)
        probs, gates, top_e = self.route(x2)
        self.aux_loss = balance_loss(probs, top_e[:, 0])

        # token-slots in priority order: all first choices (token order), then all second choices
        slot_e = top_e.t().reshape(-1)  # (k*N,)
        counts = _counts(slot_e, E)
        cap = expert_capacity(self.capacity_factor, N, k, E)
        if self.capacity_factor <= 0:  # always so in eval mode: nothing is dropped
            # shrink the buffer to the busiest expert: same result, less padding (one host sync)
            cap = max(1, min(cap, int(counts.max())))
        order = torch.argsort(slot_e, stable=True)  # grouped by expert, priority kept
        sorted_e = slot_e[order]
        starts = counts.cumsum(0) - counts
        pos = torch.arange(k * N, device=x.device) - starts[sorted_e]  # position in its expert
        keep = pos < cap
        self.drop_fraction = 1.0 - keep.float().mean().detach()
        trash = E * cap  # dropped slots point at an extra all-zero row
        dest = torch.where(keep, sorted_e * cap + pos, trash)
        slot_tok = order % N
        slot_gate = gates.t().reshape(-1)[order]

        # buffer row -> token (N = the zero padding row); dropped slots all land on `trash`
        src = torch.full((trash + 1,), N, device=x.device, dtype=torch.long)
        src = src.scatter(0, dest, slot_tok)[:trash]
        x_pad = torch.cat((x2, x2.new_zeros(1, d)))
        out = self.experts(x_pad[src].view(E, cap, d)).reshape(trash, d)
        out = torch.cat((out, out.new_zeros(1, d)))
        y_slot = out[dest] * slot_gate.unsqueeze(1)
        y = x2.new_zeros(N, d).index_add(0, slot_tok, y_slot.to(x2.dtype))
        return y.view(x.shape)


def moe_loop_reference(layer: MoEMLP, x: torch.Tensor, capacity_factor: float) -> torch.Tensor:
    """Reference MoE forward: a plain Python loop over experts, same routing and capacity rules
    as `MoEMLP.forward` (for tests and benchmarks; slow)."""
    E, k, d = layer.n_experts, layer.top_k, layer.d_model
    x2 = x.reshape(-1, d)
    N = x2.size(0)
    _, gates, top_e = layer.route(x2)
    cap = expert_capacity(capacity_factor, N, k, E)
    y = torch.zeros_like(x2)
    for e in range(E):
        toks, gs = [], []
        for j in range(k):  # rank-j choices before rank-(j+1) choices, token order within
            t = (top_e[:, j] == e).nonzero().flatten()
            toks.append(t)
            gs.append(gates[t, j])
        t, g = torch.cat(toks)[:cap], torch.cat(gs)[:cap]
        if t.numel() == 0:
            continue
        h = x2[t] @ layer.w_in[e]
        if layer.b_in is not None:
            h = h + layer.b_in[e]
        if layer.gated:
            gate, up = h.chunk(2, dim=-1)
            h = layer.act(gate) * up
        else:
            h = layer.act(h)
        out = h @ layer.w_out[e]
        if layer.b_out is not None:
            out = out + layer.b_out[e]
        y = y.index_add(0, t, (out * g.unsqueeze(1)).to(y.dtype))
    return y.view(x.shape)
