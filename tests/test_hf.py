"""Hugging Face interop (kcap.models.hf): logit parity both ways, save/load, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from kcap.models import GPT, ModelConfig, preset  # noqa: E402
from kcap.models.hf import (  # noqa: E402
    config_from_hf,
    export_hf,
    from_hf,
    hf_architecture,
    load_hf,
    to_hf,
)

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

V = 37

CASES = {
    "gpt2": (preset("gpt2-2-2", V, context=32), "GPTNeoXForCausalLM"),
    "gpt2-untied-quarter": (preset("gpt2-2-2", V, tied=False, mlp_ratio=1), "GPTNeoXForCausalLM"),
    "gpt2-silu-half-rotary": (
        preset("gpt2-1-2", V, activation="silu", rotary_fraction=0.5),
        "GPTNeoXForCausalLM",
    ),
    "gpt2-lab-rotary-floor": (  # the lab's v3 GPT2: all 12 dims of each head rotate
        preset("gpt2-1-2", V, d_model=24, rotary_min_dims=16),
        "GPTNeoXForCausalLM",
    ),
    "llama": (preset("llama-2-2", V, context=32), "LlamaForCausalLM"),
    "llama-tied-bias-gelu": (
        preset("llama-1-2", V, tied=True, bias=True, activation="gelu"),
        "LlamaForCausalLM",
    ),
    "mistral": (preset("mistral-2-4", V, d_model=64), "MistralForCausalLM"),
    "mixtral": (
        preset("mistral-2-4-moe4", V, d_model=64, top_k=2),
        "MixtralForCausalLM",
    ),
}


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Weights far from init (norm gains and biases included) so any mismatch shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            base = 1.0 if p.dim() == 1 and (p == 1).all() else 0.0
            p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))


def _ours(cfg: ModelConfig) -> GPT:
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    _randomise(model)
    return model


def _idx() -> torch.Tensor:
    return torch.randint(0, V, (2, 19), generator=torch.Generator().manual_seed(1))


def _same_architecture(a: ModelConfig, b: ModelConfig) -> None:
    """Equal configs up to how the MLP width and the rotated dims are spelled (HF has one
    factor where ours has a fraction and a floor) and the (training-only) train capacity."""
    skip = {"mlp_ratio", "mlp_hidden", "capacity_factor_train"}
    skip |= {"rotary_fraction", "rotary_min_dims"}  # compared as the dims they rotate
    assert a.model_dump(exclude=skip) == b.model_dump(exclude=skip)
    assert a.rotary_dims == b.rotary_dims
    assert a.expert_hidden == b.expert_hidden
    if not a.is_moe:
        assert a.hidden == b.hidden


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to float32 rounding: two implementations sum in different orders, so logits of
    size ~1.4 once differed by 1.06e-5 (7.7e-6 relative) in one of 1,406 elements in CI. A wrong
    weight mapping moves them by orders of magnitude more."""
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_ours_to_hf_and_back(case):
    cfg, cls = CASES[case]
    model = _ours(cfg)
    hf = to_hf(model)
    assert type(hf).__name__ == cls and not hf.training
    idx = _idx()
    with torch.no_grad():
        ours = model(idx)
        _close(hf(idx).logits, ours)
        back = from_hf(hf)
        _close(back(idx), ours)
    _same_architecture(back.cfg, cfg)
    assert (hf.lm_head.weight is hf.get_input_embeddings().weight) == cfg.tied
    assert (back.lm_head.weight is back.wte.weight) == cfg.tied


def _hf_configs():
    from transformers import GPTNeoXConfig, LlamaConfig, MistralConfig, MixtralConfig

    common = dict(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    return {
        "llama": LlamaConfig(
            **common,
            intermediate_size=40,
            num_key_value_heads=4,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        ),
        "llama-gqa-bias-tied": LlamaConfig(
            **common,
            intermediate_size=24,
            num_key_value_heads=2,
            attention_bias=True,
            mlp_bias=True,
            tie_word_embeddings=True,
        ),
        "mistral": MistralConfig(
            **common, intermediate_size=48, num_key_value_heads=2, sliding_window=None
        ),
        "gpt_neox": GPTNeoXConfig(
            **common,
            intermediate_size=96,
            use_parallel_residual=False,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.5,
            },
        ),
        "gpt_neox-tied": GPTNeoXConfig(
            **common,
            intermediate_size=64,
            use_parallel_residual=False,
            tie_word_embeddings=True,
            hidden_act="gelu",
            layer_norm_eps=1e-6,
        ),
        "mixtral": MixtralConfig(
            **common,
            intermediate_size=20,
            num_key_value_heads=2,
            num_local_experts=4,
            num_experts_per_tok=2,
            sliding_window=None,
        ),
    }


@pytest.mark.parametrize("case", list(_hf_configs()))
def test_hf_random_to_ours(case, tmp_path: Path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(_hf_configs()[case], dtype=torch.float32).eval()
    _randomise(hf)
    if hf.config.tie_word_embeddings:
        assert hf.lm_head.weight is hf.get_input_embeddings().weight
    model = from_hf(hf)
    idx = _idx()
    with torch.no_grad():
        want = hf(idx).logits
        _close(model(idx), want)
        # and a save / load round trip through disk
        hf.save_pretrained(tmp_path)
        _close(load_hf(tmp_path)(idx), want)


@pytest.mark.parametrize("case", ["gpt2", "mistral", "mixtral"])
def test_export_then_load(case, tmp_path: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = Tokenizer(models.WordLevel({"<|eos|>": 0, "a": 1, "b": 2, "<unk>": 3}, "<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tok.json"))
    model = _ours(CASES[case][0])
    out = export_hf(model, tmp_path / "ckpt", tmp_path / "tok.json")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert (out / "tokenizer.json").read_bytes() == (tmp_path / "tok.json").read_bytes()
    idx = _idx()
    with torch.no_grad():
        _close(load_hf(out)(idx), model(idx))
        hf = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
        _close(hf(idx).logits, model(idx))
    assert hf.config.eos_token_id == 0 and hf.generation_config.eos_token_id == 0
    hf_tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert hf_tok("a b <|eos|>")["input_ids"] == [1, 2, 0] and hf_tok.eos_token == "<|eos|>"
    # without a tokenizer only the model is written
    export_hf(model, tmp_path / "bare")
    assert not (tmp_path / "bare" / "tokenizer.json").exists()


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        (preset("gpt2-1-2", V, mlp_gated=True), "mlp_gated"),  # gated with LayerNorm
        (preset("gpt2-1-2", V, mlp_ratio=0), "mlp_ratio"),
        (preset("gpt2-1-2", V, bias=False), "bias"),
        (preset("gpt2-1-2", V, norm_bias=False), "norm_bias"),
        (preset("gpt2-1-4", V, n_kv_head=2), "n_kv_head"),
        (preset("llama-1-2", V, mlp_gated=False), "mlp_gated"),
        (preset("llama-1-2", V, rotary_fraction=0.5), "rotary_fraction"),
        (preset("llama-1-2-moe4", V), "top_k"),  # Switch top-1
        (preset("gpt2-1-2-moe4", V, top_k=2), "norm"),
        (preset("llama-1-2-moe4", V, top_k=2, bias=True), "bias"),
    ],
)
def test_refusals(cfg, field):
    with pytest.raises(ValueError, match=rf"^{field}: .*no transformers architecture") as e:
        hf_architecture(cfg)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=rf"^{field}: "):
        to_hf(GPT(cfg))


def test_hf_refusals():
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, MixtralConfig

    common = dict(vocab_size=V, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    bad = [
        (GPTNeoXConfig(**common, use_parallel_residual=True), "use_parallel_residual"),
        (GPTNeoXConfig(**common, use_parallel_residual=False, hidden_act="gelu_new"), "hidden_act"),
        (
            MixtralConfig(**common, num_experts_per_tok=1, num_local_experts=4),
            "num_experts_per_tok",
        ),
        (LlamaConfig(**common, attention_bias=True, mlp_bias=False), "mlp_bias"),
        (LlamaConfig(**common, head_dim=16), "head_dim"),
        (GPT2Config(n_embd=32, n_layer=1, n_head=4), "model_type"),
    ]
    for hc, field in bad:
        with pytest.raises(ValueError, match=rf"^{field}: "):
            config_from_hf(hc)


def test_load_hf_needs_a_local_checkpoint(tmp_path: Path):
    with pytest.raises(ValueError, match=r"^path: .*no config\.json"):
        load_hf(tmp_path / "missing")
