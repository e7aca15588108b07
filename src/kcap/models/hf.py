"""Hugging Face `transformers` interop (SPEC §5): export a `GPT` to the equivalent causal LM and
load one back, with identical logits (verified by tests/test_hf.py).

Mappings (anything else raises `ValueError` naming the setting that prevents it):

- LayerNorm with bias, standard (ungated) MLP, linear biases, multi-head attention (the `gpt2`
  presets, tied or untied, any MLP width > 0, any rotary fraction whose rotated dims are even)
  -> `GPTNeoXForCausalLM` with sequential residual (`use_parallel_residual=False`).
- RMSNorm, gated MLP, full rotary, dense (the `llama` / `mistral` presets) -> `MistralForCausalLM`
  with grouped-query attention and no biases, else `LlamaForCausalLM` (which also takes biases).
- RMSNorm, gated experts, no biases, full rotary, top_k = 2 -> `MixtralForCausalLM`. Mixtral
  renormalises the top-k gates, as our k = 2 router does; our k = 1 router is the Switch router
  whose gate is the raw router probability (Mixtral would use 1.0), so top_k = 1 is refused.
  Mixtral has no expert capacity, and neither has our eval mode (`kcap.models.moe`), so the
  exported function is the same; the training capacity factor does not change it and is not
  checked (a model loaded from Mixtral gets none).

Activations: ours are exact (erf) GELU and SiLU, HF's "gelu" and "silu". Rotary embedding is the
GPT-NeoX (rotate-half) layout in every architecture, as in ours. Models come back in eval mode.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kcap.errors import KcapError
from kcap.models.config import ModelConfig
from kcap.models.gpt import GPT

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, PreTrainedModel

__all__ = ["export_hf", "from_hf", "hf_architecture", "load_hf", "to_hf"]

EOS = "<|eos|>"
ARCHITECTURES = ("gpt_neox", "llama", "mistral", "mixtral")


def _refuse(field: str, message: str) -> KcapError:
    return KcapError(field, f"{message}; no transformers architecture matches")


def hf_architecture(cfg: ModelConfig) -> str:
    """The transformers `model_type` that `cfg` maps to exactly, or `ValueError` (a `KcapError`
    naming the setting that prevents export)."""
    if cfg.is_moe:
        if cfg.norm != "rmsnorm":
            raise _refuse("norm", f"{cfg.norm!r} with experts (Mixtral needs 'rmsnorm')")
        if not cfg.mlp_gated:
            raise _refuse("mlp_gated", "False with experts (Mixtral experts are gated)")
        if cfg.bias:
            raise _refuse("bias", "True with experts (Mixtral has no linear biases)")
        if cfg.rotary_dims != cfg.head_dim:
            raise _refuse("rotary_fraction", f"{cfg.rotary_fraction} (Mixtral rotates all dims)")
        if cfg.top_k != 2:
            raise _refuse(
                "top_k",
                "1 uses the raw router probability as gate (Switch) while Mixtral renormalises "
                "top-k gates to sum to 1, so only top_k=2 exports",
            )
        return "mixtral"
    if not cfg.has_mlp:
        raise _refuse("mlp_ratio", "0 (blocks without MLP)")
    if cfg.norm == "layernorm":
        if cfg.mlp_gated:
            raise _refuse("mlp_gated", "True with LayerNorm (GPT-NeoX MLPs are ungated)")
        if not cfg.norm_bias:
            raise _refuse("norm_bias", "False with LayerNorm (GPT-NeoX LayerNorms have biases)")
        if not cfg.bias:
            raise _refuse("bias", "False with LayerNorm (GPT-NeoX linear layers have biases)")
        if cfg.kv_heads != cfg.n_head:
            raise _refuse("n_kv_head", f"{cfg.kv_heads} < n_head (GPT-NeoX has no GQA)")
        _neox_rotary_factor(cfg)
        return "gpt_neox"
    if not cfg.mlp_gated:
        raise _refuse("mlp_gated", "False with RMSNorm (LLaMA/Mistral MLPs are gated)")
    if cfg.rotary_dims != cfg.head_dim:
        raise _refuse("rotary_fraction", f"{cfg.rotary_fraction} with RMSNorm (LLaMA rotates all)")
    return "mistral" if cfg.kv_heads != cfg.n_head and not cfg.bias else "llama"


def _neox_rotary_factor(cfg: ModelConfig) -> float:
    """A partial_rotary_factor f with int(head_dim * f) == cfg.rotary_dims (HF's rule)."""
    for f in (cfg.rotary_fraction, cfg.rotary_dims / cfg.head_dim):
        if int(cfg.head_dim * f) == cfg.rotary_dims:
            return f
    raise _refuse("rotary_fraction", f"{cfg.rotary_fraction} is not representable in GPT-NeoX")


# ---------------------------------------------------------------- configs


def _hf_config(cfg: ModelConfig, arch: str) -> PreTrainedConfig:
    from transformers import GPTNeoXConfig, LlamaConfig, MistralConfig, MixtralConfig

    common = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        max_position_embeddings=cfg.context,
        hidden_act=cfg.activation,
        initializer_range=cfg.init_std,
        tie_word_embeddings=cfg.tied,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        attention_dropout=0.0,
    )
    rope: dict[str, object] = {"rope_type": "default", "rope_theta": cfg.rope_base}
    if arch == "gpt_neox":
        rope["partial_rotary_factor"] = _neox_rotary_factor(cfg)
        return GPTNeoXConfig(
            **common,
            intermediate_size=cfg.hidden,
            layer_norm_eps=cfg.norm_eps,
            use_parallel_residual=False,
            attention_bias=True,
            hidden_dropout=0.0,
            rope_parameters=rope,
        )
    llama_like = dict(
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        rms_norm_eps=cfg.norm_eps,
        rope_parameters=rope,
    )
    if arch == "llama":
        return LlamaConfig(
            **common,
            **llama_like,
            intermediate_size=cfg.hidden,
            attention_bias=cfg.bias,
            mlp_bias=cfg.bias,
        )
    if arch == "mistral":
        return MistralConfig(
            **common, **llama_like, intermediate_size=cfg.hidden, sliding_window=None
        )
    return MixtralConfig(
        **common,
        **llama_like,
        intermediate_size=cfg.expert_hidden,
        sliding_window=None,
        num_local_experts=cfg.n_experts,
        num_experts_per_tok=cfg.top_k,
        router_aux_loss_coef=cfg.aux_loss_coef,
        router_jitter_noise=0.0,
    )


def config_from_hf(hc: PreTrainedConfig) -> ModelConfig:
    """The `ModelConfig` equivalent to a transformers config, or `ValueError` naming the
    setting that has no equivalent."""
    arch = hc.model_type
    if arch not in ARCHITECTURES:
        raise KcapError("model_type", f"{arch!r} is not supported; expected one of {ARCHITECTURES}")
    if hc.hidden_act not in ("gelu", "silu"):
        raise KcapError("hidden_act", f"{hc.hidden_act!r} is not supported; expected gelu or silu")
    rope = dict(hc.rope_parameters or {})
    if rope.get("rope_type", "default") != "default":
        raise KcapError("rope_parameters", f"rope_type {rope['rope_type']!r} is not supported")
    d, n_head = hc.hidden_size, hc.num_attention_heads
    head_dim = getattr(hc, "head_dim", None)
    if head_dim not in (None, d // n_head) or d % n_head:
        raise KcapError("head_dim", f"{head_dim} != hidden_size / num_attention_heads")
    prf = float(rope.get("partial_rotary_factor", 1.0))
    kw: dict[str, object] = dict(
        n_layer=hc.num_hidden_layers,
        n_head=n_head,
        d_model=d,
        vocab_size=hc.vocab_size,
        context=hc.max_position_embeddings,
        activation=hc.hidden_act,
        tied=bool(hc.tie_word_embeddings),
        rope_base=float(rope.get("rope_theta", 10000.0)),
        init_std=hc.initializer_range,
        rotary_fraction=prf,
    )
    if arch == "gpt_neox":
        if hc.use_parallel_residual:
            raise KcapError("use_parallel_residual", "True is not supported (sequential only)")
        if not hc.attention_bias:
            raise KcapError("attention_bias", "False with GPT-NeoX's biased MLP is not supported")
        rot = int((d // n_head) * prf)
        if rot < 2 or rot % 2:
            raise KcapError("partial_rotary_factor", f"{prf} rotates {rot} dims (need even >= 2)")
        kw |= dict(
            norm="layernorm",
            norm_bias=True,
            norm_eps=hc.layer_norm_eps,
            mlp_gated=False,
            bias=True,
            **_mlp_width(hc.intermediate_size, d),
        )
    else:
        if prf != 1.0:
            raise KcapError("partial_rotary_factor", f"{prf} is not supported for {arch}")
        window = getattr(hc, "sliding_window", None)
        if window is not None and window < hc.max_position_embeddings:
            raise KcapError("sliding_window", f"{window} is not supported (full attention only)")
        if arch == "llama" and hc.attention_bias != hc.mlp_bias:
            raise KcapError("mlp_bias", "must equal attention_bias (one bias switch)")
        kw |= dict(
            norm="rmsnorm",
            norm_bias=False,
            norm_eps=hc.rms_norm_eps,
            mlp_gated=True,
            bias=bool(getattr(hc, "attention_bias", False)),
            n_kv_head=None if hc.num_key_value_heads == n_head else hc.num_key_value_heads,
        )
        if arch == "mixtral":
            if hc.num_experts_per_tok != 2:
                raise KcapError(
                    "num_experts_per_tok", f"{hc.num_experts_per_tok} (only 2 maps to our router)"
                )
            kw |= dict(
                n_experts=hc.num_local_experts,
                top_k=2,
                capacity_factor_train=0.0,
                aux_loss_coef=hc.router_aux_loss_coef,
                expert_hidden_ratio=hc.intermediate_size / d,
            )
        else:
            kw |= _mlp_width(hc.intermediate_size, d)
    cfg = ModelConfig(**kw)
    if cfg.is_moe and cfg.expert_hidden != hc.intermediate_size:
        raise KcapError("intermediate_size", f"{hc.intermediate_size} is not representable")
    return cfg


def _mlp_width(intermediate: int, d: int) -> dict[str, object]:
    """mlp_ratio when it reproduces the width exactly, else an explicit mlp_hidden."""
    ratio = intermediate / d
    if round(ratio * d) == intermediate:
        return {"mlp_ratio": ratio}
    return {"mlp_hidden": intermediate}


# ---------------------------------------------------------------- weights

Fn = Callable[[torch.Tensor], torch.Tensor]


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _t12(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(1, 2).contiguous()


def _key_map(cfg: ModelConfig, arch: str) -> list[tuple[str, str, Fn, Fn]]:
    """(our key, HF key, ours -> HF, HF -> ours) for every one-to-one tensor; the fused qkv of
    LLaMA-like models is split separately (`_split_qkv`)."""
    hd, nh = cfg.head_dim, cfg.n_head

    def neox_qkv(t: torch.Tensor) -> torch.Tensor:  # [q heads | k heads | v heads] -> per head
        return t.unflatten(0, (3, nh, hd)).transpose(0, 1).flatten(0, 2).contiguous()

    def ours_qkv(t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(0, (nh, 3, hd)).transpose(0, 1).flatten(0, 2).contiguous()

    pairs: list[tuple[str, str, Fn, Fn]] = []

    def add(ours: str, theirs: str, fwd: Fn = _same, bwd: Fn = _same, bias: bool = False):
        pairs.append((f"{ours}.weight", f"{theirs}.weight", fwd, bwd))
        if bias:
            pairs.append((f"{ours}.bias", f"{theirs}.bias", fwd, bwd))

    if arch == "gpt_neox":
        add("wte", "gpt_neox.embed_in")
        for i in range(cfg.n_layer):
            o, h = f"blocks.{i}", f"gpt_neox.layers.{i}"
            add(f"{o}.ln_1", f"{h}.input_layernorm", bias=True)
            add(f"{o}.attn.qkv", f"{h}.attention.query_key_value", neox_qkv, ours_qkv, True)
            add(f"{o}.attn.proj", f"{h}.attention.dense", bias=True)
            add(f"{o}.ln_2", f"{h}.post_attention_layernorm", bias=True)
            add(f"{o}.mlp.fc", f"{h}.mlp.dense_h_to_4h", bias=True)
            add(f"{o}.mlp.proj", f"{h}.mlp.dense_4h_to_h", bias=True)
        add("ln_f", "gpt_neox.final_layer_norm", bias=True)
    else:
        add("wte", "model.embed_tokens")
        for i in range(cfg.n_layer):
            o, h = f"blocks.{i}", f"model.layers.{i}"
            add(f"{o}.ln_1", f"{h}.input_layernorm")
            add(f"{o}.attn.proj", f"{h}.self_attn.o_proj", bias=cfg.bias)
            add(f"{o}.ln_2", f"{h}.post_attention_layernorm")
            if arch == "mixtral":
                add(f"{o}.mlp.router", f"{h}.mlp.gate")
                pairs.append((f"{o}.mlp.w_in", f"{h}.mlp.experts.gate_up_proj", _t12, _t12))
                pairs.append((f"{o}.mlp.w_out", f"{h}.mlp.experts.down_proj", _t12, _t12))
            else:
                for name in ("gate", "up", "down"):
                    add(f"{o}.mlp.{name}", f"{h}.mlp.{name}_proj", bias=cfg.bias)
        add("ln_f", "model.norm")
    pairs.append(("lm_head.weight", "lm_head.weight", _same, _same))
    return pairs


def _qkv_keys(cfg: ModelConfig, arch: str) -> list[tuple[str, tuple[str, str, str]]]:
    if arch == "gpt_neox":
        return []
    out = []
    for i in range(cfg.n_layer):
        for p in ("weight", "bias") if cfg.bias else ("weight",):
            hf = tuple(f"model.layers.{i}.self_attn.{n}_proj.{p}" for n in "qkv")
            out.append((f"blocks.{i}.attn.qkv.{p}", hf))
    return out


def _qkv_sizes(cfg: ModelConfig) -> tuple[int, int, int]:
    kv = cfg.kv_heads * cfg.head_dim
    return (cfg.n_head * cfg.head_dim, kv, kv)


def _load(module: torch.nn.Module, state: dict[str, torch.Tensor], tied: bool, head: str) -> None:
    """Load `state` strictly, except that a tied output head may be absent from either side."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (tied and k == head)]
    unexpected = [k for k in unexpected if not (tied and k == head)]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping mismatch: missing {missing}, unexpected {unexpected}")


@torch.no_grad()
def to_hf(model: GPT) -> PreTrainedModel:
    """An equivalent float32 transformers causal LM (eval mode) with copies of the weights."""
    from transformers import AutoModelForCausalLM

    cfg = model.cfg
    arch = hf_architecture(cfg)
    hf = AutoModelForCausalLM.from_config(_hf_config(cfg, arch), dtype=torch.float32)
    ours = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    state = {hk: fwd(ours[ok]) for ok, hk, fwd, _ in _key_map(cfg, arch)}
    for ok, hks in _qkv_keys(cfg, arch):
        state |= dict(zip(hks, ours[ok].split(_qkv_sizes(cfg)), strict=True))
    _load(hf, state, cfg.tied, "lm_head.weight")
    if cfg.tied:
        hf.tie_weights()
    return hf.eval()


@torch.no_grad()
def from_hf(hf_model: PreTrainedModel) -> GPT:
    """Our `GPT` (float32, eval mode) equivalent to a transformers causal LM of a mapped
    architecture (`ValueError` naming the setting otherwise)."""
    cfg = config_from_hf(hf_model.config)
    arch = hf_model.config.model_type
    theirs = {k: v.detach().float().cpu() for k, v in hf_model.state_dict().items()}
    if cfg.tied:
        theirs.setdefault("lm_head.weight", hf_model.get_input_embeddings().weight.float().cpu())
    state: dict[str, torch.Tensor] = {}
    for ok, hk, _, bwd in _key_map(cfg, arch):
        if hk not in theirs:
            raise RuntimeError(f"weight mapping mismatch: {hk} missing from the HF model")
        state[ok] = bwd(theirs[hk])
    for ok, hks in _qkv_keys(cfg, arch):
        state[ok] = torch.cat([theirs[k] for k in hks])
    model = GPT(cfg)
    _load(model, state, cfg.tied, "lm_head.weight")
    return model.eval()


def export_hf(model: GPT, out_dir: Path, tokenizer_json: Path | None = None) -> Path:
    """Save `model` as a transformers checkpoint (config.json + model.safetensors) in `out_dir`;
    with `tokenizer_json`, also a `PreTrainedTokenizerFast` (eos `<|eos|>`, also the pad token)
    whose eos id goes into the model and generation configs. Returns `out_dir`."""
    out_dir = Path(out_dir)
    hf = to_hf(model)
    if tokenizer_json is not None:
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        if EOS not in Tokenizer.from_file(str(tokenizer_json)).get_vocab():
            raise KcapError("tokenizer", f"{tokenizer_json} has no {EOS} token")
        tok = PreTrainedTokenizerFast(
            tokenizer_file=str(tokenizer_json), eos_token=EOS, pad_token=EOS
        )
        if len(tok) > model.cfg.vocab_size:
            raise KcapError(
                "tokenizer",
                f"{len(tok)} tokens exceed the model's vocab_size {model.cfg.vocab_size}",
            )
        eos_id = tok.convert_tokens_to_ids(EOS)
        for c in (hf.config, hf.generation_config):
            c.eos_token_id = eos_id
            c.pad_token_id = eos_id
        out_dir.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(out_dir)
        shutil.copyfile(tokenizer_json, out_dir / "tokenizer.json")
    hf.save_pretrained(out_dir)
    return out_dir


def load_hf(path: Path | str) -> GPT:
    """Load a local transformers checkpoint directory (never downloads) as our `GPT`."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise KcapError("path", f"{path} is not a local Hugging Face checkpoint (no config.json)")
    hf = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    return from_hf(hf)
