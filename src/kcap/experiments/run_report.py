"""A report folder for one run: markdown summary plus loss and bits-over-training plots (PNG),
and, when the run has been probed (RUN_DIR/extract.json, `kcap extract`), its memorisable and
extractable accuracy per attribute."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def measurement_rows(m: dict) -> list[tuple[str, str]]:
    """(label, value) rows of a measurement, shared by the terminal table and the reports."""
    b = m["bits"]
    stored = (
        ("bits stored", f"{b['total']:,.0f}")
        if is_random_strings(m)
        else (
            "bits stored (name / value / diversity)",
            f"{b['total']:,.0f}  ({b['name']:,.0f} / {b['value']:,.0f} / {b['diversity']:,.0f})",
        )
    )
    return [
        ("data bits", f"{m['data_bits']:,.0f}"),
        stored,
        ("fraction of data bits stored", f"{b['total'] / m['data_bits']:.1%}"),
        ("P (counted params)", f"{m['P']:,}"),
        ("capacity ratio R (bits/param)", f"{m['R']:.3f}"),
        ("R_max", f"{m['R_max']:.3f}"),
        ("recall accuracy", f"{m['recall_accuracy']:.1%}"),
        *_detail_rows(m.get("details") or {}),
    ]


def is_random_strings(m: dict) -> bool:
    """Whether a measurement is of random strings: memorised bits, no names, values or p1/p2."""
    return "fresh_floor_bits" in (m.get("details") or {})


def _detail_rows(details: dict) -> list[tuple[str, str]]:
    """Rows of kind-specific figures: random strings' raw bits beside the fresh-string floor the
    net figure is short of; bioS's work-city loss (charged with the employer)."""
    rows = []
    if "fresh_floor_bits" in details:
        raw, floor = details["raw_memorized_bits"], details["fresh_floor_bits"]
        net = details["net_memorized_bits"]
        rows.append(
            ("memorised bits: raw - fresh floor = net", f"{raw:,.0f} - {floor:,.0f} = {net:,.0f}")
        )
    if "work_city_loss" in details:
        rows.append(("work city loss, in employer (nats)", f"{details['work_city_loss']:.3f}"))
    return rows


def _attribute_label(attribute: str, m: dict) -> str:
    """An attribute's row label: bioS's employer row carries the work city's loss too."""
    if attribute == "employer" and "work_city_loss" in (m.get("details") or {}):
        return "employer (with work city)"
    return attribute


def _notes_section(notes: list[str]) -> list[str]:
    """Markdown lines saying what this kind's figures mean, when the measurement says."""
    return ["## Notes", "", *(f"- {note}" for note in notes), ""] if notes else []


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def extraction_section(r: dict) -> list[str]:
    """Markdown lines of an extraction probe's result (RUN_DIR/extract.json): memorisable,
    extractable and chance accuracy per attribute and overall."""
    mem, ext, chance = r["memorisable"], r["extractable"], r["chance"]
    f = r["finetune"]
    how = (
        f"LoRA rank {f['qv_rank']} on q/v and {f['embedding_rank']} on the embedding"
        if f["method"] == "lora"
        else "full fine-tuning"
    )
    md = [
        "## Knowledge extraction",
        "",
        f"Fine-tuned a copy on the QA pairs of {r['split']['finetune_people']:,} people "
        f"({how}, {f['steps']:,} steps); answers of the other "
        f"{ext['n_people']:,} people scored by exact match; {chance['rule']}.",
        "",
        "| attribute | memorisable | extractable | chance |",
        "|---|---|---|---|",
    ]
    for a in r["attributes"]:
        label = a if a in r["overall_attributes"] else f"{a} (not in overall)"
        md.append(
            f"| {label} | {_pct(mem['per_attribute'].get(a))} | "
            f"{_pct(ext['per_attribute'].get(a))} | {_pct(chance['per_attribute'].get(a))} |"
        )
    md.append(
        f"| **overall** | {_pct(mem['overall'])} | {_pct(ext['overall'])} | "
        f"{_pct(chance['overall'])} |"
    )
    return [*md, ""]


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """(label, value) rows of a run summary (RUN_DIR/run.json): steps, tokens, time."""
    return [
        ("steps / tokens", f"{summary['steps']:,} / {summary['tokens']:,}"),
        ("train time", f"{summary['train_seconds']:.0f} s ({summary['tokens_per_s']:,.0f} tok/s)"),
    ]


def read_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(loss records, measurement records) from RUN_DIR/metrics.jsonl; events (a compile
    time, a restart after a non-finite loss) are neither."""
    losses, measures = [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "measure" in rec:
            measures.append(rec)
        elif "loss" in rec:
            losses.append(rec)
    return losses, measures


def write_run_report(run_dir: Path, out_dir: Path, *, title: str = "kcap run") -> Path:
    """Write ``out_dir/report.md``, ``loss.png`` and ``bits.png``; return the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    m = json.loads((run_dir / "measure.json").read_text())
    summary = json.loads((run_dir / "run.json").read_text())
    losses, measures = read_metrics(run_dir)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in losses], [r["loss"] for r in losses], lw=1)
    ax.set(xlabel="step", ylabel="training loss (nats/token)", title="training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in measures]
    ax.plot(steps, [r["measure"]["bits"] for r in measures], marker="o", label="bits stored")
    ax.axhline(m["data_bits"], color="k", ls="--", lw=1, label="data bits")
    ax.set(xlabel="step", ylabel="bits", title="knowledge stored over training")
    ax2 = ax.twinx()
    ax2.plot(
        steps,
        [r["measure"]["recall_accuracy"] for r in measures],
        color="tab:green",
        marker="s",
        ms=3,
        lw=1,
        label="recall accuracy",
    )
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("recall accuracy")
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "bits.png", dpi=120)
    plt.close(fig)

    exposures = summary["exposures"]
    extraction = None
    if (run_dir / "extract.json").is_file():
        extraction = json.loads((run_dir / "extract.json").read_text())
    rows = [
        ("dataset", f"{m['kind']}, N = {m['n_people']:,}"),
        *measurement_rows(m),
        *summary_rows(summary),
        ("exposures (min / max realised)", f"{exposures['min']} / {exposures['max']}"),
    ]
    if extraction is not None:
        rows += [
            ("memorisable accuracy", _pct(extraction["memorisable"]["overall"])),
            (
                "extractable accuracy (chance)",
                f"{_pct(extraction['extractable']['overall'])} "
                f"({_pct(extraction['chance']['overall'])})",
            ),
        ]
    per_attr = "\n".join(
        f"| {_attribute_label(a, m)} | {m['loss_per_attribute'][a]:.3f} | "
        f"{m['bits_per_attribute'][a]:,.0f} | "
        f"{m['recall_per_attribute'].get(a, float('nan')):.1%} |"
        for a in m["bits_per_attribute"]
    )
    md = [f"# {title}", "", "| metric | value |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in rows]
    md += [
        "",
        "## Per attribute",
        "",
        "| attribute | loss (nats) | bits | recall |",
        "|---|---|---|---|",
        per_attr,
        "",
        *(
            ["## Notes", "", *(f"- {note}" for note in m.get("notes") or []), ""]
            if m.get("notes")
            else []
        ),
        *(extraction_section(extraction) if extraction is not None else []),
        "![training loss](loss.png)",
        "",
        "![bits over training](bits.png)",
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(md))
    return path
