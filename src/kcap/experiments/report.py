"""`kcap report`: a static HTML page and its markdown twin, from the results store.

What it shows: the twelve results of SPEC §7 (the paper's claim, our figure, the scale, a verdict
with the numbers), the table of fitted laws, each model's capacity verdict with its reason (its
best bits at every N, and whether they rose, held within 10% or fell), and the figures -- per
group a Figure-1-style plot (bits stored against P, log-log, one series per N, the 2·P and 1·P
lines and the fitted law), capacity by architecture, bits over training, and the bioD
per-component bars; where a run has an extraction probe (`kcap extract`), its memorisable and
extractable accuracy beside its bits (the runs table, and a knowledge-extraction table; runs
without one show a dash). Every figure is written as PNG and SVG under ``figures/``; the page
references them relatively, so the folder opens from disk with no server and no network. A few
lines of inline script mark figures that failed to load (and let a headless browser count them).
"""

from __future__ import annotations

import html
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from kcap.atomic import staged_dir
from kcap.experiments.analysis import (
    Law,
    Point,
    analyse,
    count_text,
    describe_scale,
    load_points,
)
from kcap.experiments.paper import MIN_RATIO_SEEDS, evaluate_all
from kcap.experiments.store import ResultsStore

__all__ = ["Figure", "write_report"]

FIGURES = "figures"
_FORMATS = ("png", "svg")


@dataclass
class Figure:
    slug: str
    title: str
    caption: str
    placeholder: bool = False


# ------------------------------------------------------------------------------ figures


def _save(fig, out: Path, slug: str) -> None:
    for fmt in _FORMATS:
        fig.savefig(out / f"{slug}.{fmt}", dpi=120 if fmt == "png" else None)
    plt.close(fig)


def _placeholder(out: Path, slug: str, title: str, text: str) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="0.4", wrap=True)
    ax.set_axis_off()
    ax.set_title(title)
    _save(fig, out, slug)
    return Figure(slug, title, text, placeholder=True)


def _capacity_figure(out: Path, law: Law) -> Figure:
    """Figure 1 of the paper: bits stored vs P (log-log), one series per N, 2·P and 1·P."""
    slug = f"capacity-{law.slug}"
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    by_n: dict[int, list[Point]] = defaultdict(list)
    for p in law.points:
        by_n[p.n].append(p)
    colors = plt.cm.viridis(np.linspace(0.05, 0.9, max(1, len(by_n))))
    ps = [p.P for p in law.points]
    for color, (n, pts) in zip(colors, sorted(by_n.items()), strict=True):
        pts = sorted(pts, key=lambda p: p.P)
        ax.plot(
            [p.P for p in pts],
            [p.bits for p in pts],
            "o-",
            color=color,
            ms=4,
            lw=1,
            label=f"N={n:,}",
        )
        ax.axhline(pts[0].data_bits, color=color, lw=0.6, ls=":", alpha=0.7)
    x = np.geomspace(min(ps) / 1.5, max(ps) * 1.5, 50)
    ax.plot(x, 2 * x, "k--", lw=1, label="2 bits/param")
    ax.plot(x, x, "k-.", lw=1, alpha=0.6, label="1 bit/param")
    if law.R is not None:
        ax.plot(x, law.R * x, color="tab:red", lw=1.2, label=f"fit: {law.R:.2f} bits/param")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="P (counted parameters)", ylabel="bits of knowledge stored", title=law.label)
    ax.grid(alpha=0.3, which="both", lw=0.4)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    _save(fig, out, slug)
    zero = sum(p.bits <= 0 for p in law.points)
    caption = (
        f"Bits stored against P for {law.label} ({describe_scale(law.points)}); dotted: the "
        f"data's bits for each N; peak R {law.peak_R:.2f}"
        + (f", fitted R {law.R:.2f}" if law.R is not None else ", no model reached capacity")
        + (f"; {count_text(zero, 'run')} stored 0 bits (off the log axes)" if zero else "")
    )
    return Figure(slug, f"Capacity: {law.label}", caption)


def architecture_bars(laws: list[Law], exposures: int) -> tuple[list, set[int]]:
    """The bars of the architectures figure: (label, value, low, high, fitted) per group at
    ``exposures``, and the N their peaks are read over. A fitted R comes with its interval; a
    group with no model at capacity shows its peak R over the N every group ran at (peaks
    compare fairly only over the same N: bits may still rise with N), with several seeds the
    mean of each seed's peak and their range. Peaks are read on the model sizes every group ran
    (`analysis.size_of`), where there are any: a larger baseline model is not an architecture's
    gain."""
    fams = [law for law in laws if law.exposures == exposures and law.quant is None]
    sizes = set.intersection(*(law.sizes() for law in fams)) if fams else set()
    ran = [{p.n for p in law.points_of(sizes or None)} for law in fams]
    common = set.intersection(*ran) if ran else set()
    bars = []
    for law in fams:
        label = f"{law.arch}\n{law.family}"
        if law.R is not None:
            lo, hi = law.interval or (law.R, law.R)
            bars.append((label, law.R, lo, hi, True))
        else:
            est = law.peak_estimate(common or None, sizes or None)
            lo, hi = est.interval or (est.value, est.value)
            bars.append((label, est.value, lo, hi, False))
    return bars, common


def _architecture_figure(out: Path, laws: list[Law], exposures: int) -> Figure:
    slug = f"architectures-e{exposures}"
    found, common = architecture_bars(laws, exposures)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(found) + 2), 3.8))
    labels = [b[0] for b in found]
    values = [b[1] for b in found]
    lows = [b[1] - b[2] for b in found]
    highs = [b[3] - b[1] for b in found]
    hatches = ["" if b[4] else "//" for b in found]
    bars = ax.bar(
        range(len(values)), values, yerr=[lows, highs], capsize=3, color="tab:blue", alpha=0.8
    )
    for bar, hatch in zip(bars, hatches, strict=True):
        bar.set_hatch(hatch)
    ax.axhline(2, color="k", ls="--", lw=1)
    ax.axhline(1, color="k", ls="-.", lw=1, alpha=0.6)
    tilt = {"rotation": 25, "ha": "right"} if len(values) > 5 else {}  # long variant names
    ax.set_xticks(range(len(values)), labels, fontsize=7, **tilt)
    ax.set(ylabel="bits / parameter", title=f"Capacity by architecture, {exposures} exposures")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, out, slug)
    over = f" over N = {', '.join(f'{n:,}' for n in sorted(common))}" if common else ""
    return Figure(
        slug,
        f"Architectures, {exposures} exposures",
        f"Fitted R with its interval (the laws table says what each is over); hatched bars are "
        f"peak R{over} where no model reached capacity (with several seeds: the mean of each "
        f"seed's peak, the bar their range). Dashed: 2 bits/param; dash-dot: 1.",
    )


def _training_figure(out: Path, laws: list[Law]) -> Figure | None:
    runs = [p for law in laws for p in law.points if p.history]
    if not runs:
        return None
    slug = "training"
    runs = sorted(runs, key=lambda p: (p.family, p.exposures, p.P, p.n))[:24]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.cm.plasma(np.linspace(0.05, 0.85, len(runs)))
    for color, p in zip(colors, runs, strict=True):
        final = max(h["step"] for h in p.history)
        xs = [h["step"] / final * p.exposures for h in p.history]
        ys = [h["bits"] / p.data_bits for h in p.history]
        ax.plot(
            xs,
            ys,
            "-",
            marker=".",
            color=color,
            lw=1,
            label=f"{p.arch} P={p.P / 1e3:.0f}k N={p.n:,}",
        )
    ax.set(
        xlabel="exposures seen",
        ylabel="fraction of the data's bits stored",
        title="Knowledge over training",
        ylim=(0, 1.05),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="upper left")
    fig.tight_layout()
    _save(fig, out, slug)
    return Figure(
        slug,
        "Bits over training",
        "In-training measurements (a subset of people), as a fraction of the data's "
        "bits, against exposures seen.",
    )


def _components_figure(out: Path, points: list[Point]) -> Figure | None:
    biod = sorted([p for p in points if p.family.startswith("bioD")], key=lambda p: (p.n, p.P))
    if not biod:
        return None
    biod = biod[:30]
    slug = "components"
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(biod) + 2), 4))
    x = np.arange(len(biod))
    bottom = np.zeros(len(biod))
    for comp, color in (("name", "tab:orange"), ("value", "tab:blue"), ("diversity", "tab:green")):
        vals = np.array([p.components.get(comp, 0.0) for p in biod])
        ax.bar(x, vals, bottom=bottom, color=color, label=f"{comp} (stored)")
        bottom += vals
    ax.scatter(
        x, [p.data_bits for p in biod], marker="_", s=200, color="k", label="data bits", zorder=3
    )
    ax.set_xticks(x, [f"N={p.n}\nP={p.P / 1e3:.0f}k" for p in biod], fontsize=6)
    ax.set(ylabel="bits", title="bioD: bits stored by component")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, out, slug)
    return Figure(
        slug,
        "bioD components",
        "Name, value and diversity bits stored by each bioD run (paper Figure 13); "
        "black ticks: the data's total bits.",
    )


def make_figures(out: Path, laws: list[Law], points: list[Point]) -> list[Figure]:
    """Every figure of the report (placeholders where there is nothing to plot yet)."""
    out.mkdir(parents=True, exist_ok=True)
    figs: list[Figure] = [_capacity_figure(out, law) for law in laws]
    if not laws:
        figs.append(_placeholder(out, "capacity", "Capacity", "no finished runs yet"))
    exposures = sorted({law.exposures for law in laws}, reverse=True)
    figs += [_architecture_figure(out, laws, e) for e in exposures]
    if not exposures:
        figs.append(_placeholder(out, "architectures", "Architectures", "no finished runs yet"))
    figs.append(
        _training_figure(out, laws)
        or _placeholder(
            out,
            "training",
            "Bits over training",
            "no run recorded in-training measurements (a run needs measurement.every; "
            "records rebuilt from CSV rows carry none)",
        )
    )
    figs.append(
        _components_figure(out, points)
        or _placeholder(out, "components", "bioD components", "no bioD runs yet")
    )
    return figs


# ------------------------------------------------------------------------------ page


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}
table{border-collapse:collapse;width:100%;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;white-space:nowrap}
.verdict{font-weight:600;white-space:nowrap}
.v-reproduced{color:#11723a}.v-partly{color:#a06800}.v-not-reproduced{color:#b3261e}
.v-inconclusive{color:#555}.v-not-yet-measured{color:#888}
figure{margin:1.5em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:13px;color:#444} .missing{color:#b3261e;font-weight:600}
small,.detail{color:#555;font-size:12px}
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll('figure img'));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-figures', imgs.length);
  document.body.setAttribute('data-figures-loaded', ok.length);
  imgs.forEach(function (i) {
    if (!(i.complete && i.naturalWidth > 0)) {
      var p = document.createElement('p');
      p.className = 'missing';
      p.textContent = 'figure missing: ' + i.getAttribute('src');
      i.parentNode.insertBefore(p, i.nextSibling);
    }
  });
});
"""


def _e(x: object) -> str:
    return html.escape(str(x))


def _interval_cell(law: Law) -> str:
    """The law's interval and what it is over; "—" where it has none (one model, no law)."""
    if law.R is None:
        return "—"
    iv = "—" if law.interval is None else f"[{law.interval[0]:.3f}, {law.interval[1]:.3f}]"
    return f"{iv} ({law.interval_over})"


def _law_cells(law: Law) -> list[str]:
    return [
        law.family,
        str(law.exposures),
        law.arch + (f" int{law.quant}" if law.quant else ""),
        ", ".join(law.quantizers) or "—",
        str(len(law.points)),
        f"{law.n_at_capacity}/{len(law.models)}",
        f"{law.peak_R:.3f}",
        "—" if law.R is None else f"{law.R:.3f}",
        _interval_cell(law),
        "—" if law.slope is None else f"{law.slope:.2f}",
        describe_scale(law.points),
    ]


_LAW_HEAD = [
    "family",
    "exposures",
    "architecture",
    "quantized by",
    "runs",
    "models at capacity",
    "peak R",
    "R (law)",
    "interval",
    "log-log slope",
    "scale",
]


_MODEL_HEAD = [
    "group",
    "model",
    "seed",
    "data setting",
    "P",
    "best bits by N",
    "memorisation began (exposures) by N",
    "C/P",
    "C per non-embedding param",
    "capacity",
]


def mixed_notes(laws: list[Law]) -> list[str]:
    """A warning for each law whose models were built with different scale settings
    (`Law.variants`): a store that holds two recipe versions reads them as one law."""
    notes = []
    for law in laws:
        if len(law.variants) > 1:
            built = "; ".join(v or "none" for v in law.variants)
            notes.append(
                f"{law.label} mixes models built with different scale settings ({built}): "
                "its law is not one recipe's; keep each recipe version in its own store "
                "(README, Results)."
            )
    return notes


def _kbits(bits: float) -> str:
    return f"{bits / 1000:.1f}k"


def _onset_text(onset: tuple[float, bool] | None) -> str:
    """'34', or '≤ 226' where memorisation had begun by the first measurement; '—' for none."""
    if onset is None:
        return "—"
    exposures, bound = onset
    return ("≤ " if bound else "") + f"{exposures:.0f}"


def _model_rows(laws: list[Law]) -> list[list[str]]:
    """One row per model of every law: what it stored at each N, and why it is (not) at
    capacity (`ModelCapacity.why`)."""
    rows = []
    for law in laws:
        group = f"{law.family}, {law.exposures} exp., " + law.arch
        group += f" int{law.quant}" if law.quant else ""
        for m in sorted(law.models, key=lambda m: (m.setting, m.P, m.replicate)):
            by_n = " · ".join(f"{n:,}: {_kbits(b)}" for n, b in m.bits_by_n.items())
            onsets = " · ".join(f"{n:,}: {_onset_text(e)}" for n, e in m.onset_by_n.items())
            rows.append(
                [
                    group,
                    m.model,
                    f"{m.replicate[0]}/{m.replicate[1]}",
                    m.setting,
                    f"{m.P:,}",
                    by_n,
                    onsets,
                    f"{m.R:.3f}",
                    f"{m.bits / m.non_embedding:.3f}" if m.non_embedding else "—",
                    ("**yes**: " if m.at_capacity else "no: ") + m.why,
                ]
            )
    return rows


def write_report(
    db: str | Path,
    out: str | Path,
    *,
    title: str = "kcap report",
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Write ``out/index.html``, ``out/report.md`` and ``out/figures/``; return the HTML path.

    The store is read first, and the files are staged beside ``out`` and moved in at the end
    (`kcap.atomic.staged_dir`), so a failure leaves ``out`` as it was. ``warn`` is also handed
    each warning the page carries (`mixed_notes`), for the console."""
    out = Path(out)
    points = load_points(db)
    laws = analyse(points)
    for note in mixed_notes(laws) if warn else ():
        warn(note)
    findings = evaluate_all(laws)
    status = _status_counts(db)
    extractions = load_extractions(db)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    source = relative_to(db, out)
    with staged_dir(out, merge=True) as tmp:
        figures = make_figures(tmp / FIGURES, laws, points)
        slugs = {f.slug for f in figures}
        args = (title, stamp, source, status, findings, laws, figures, slugs, points, extractions)
        _write_html(tmp, *args)
        _write_markdown(tmp, *args)
    return out / "index.html"


def load_extractions(db: str | Path) -> dict[str, dict]:
    """Each run's latest extraction result (RUN_DIR/extract.json's content), by run_id."""
    if not Path(db).is_file():
        return {}
    with ResultsStore(db) as store:
        return {run_id: rec.result for run_id, rec in store.latest_extractions().items()}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


_EXTRACTION_HEAD = [
    "name",
    "dataset",
    "bits",
    "R",
    "memorisable",
    "extractable",
    "chance",
    "held out",
    "fine-tuning",
]


def _extraction_rows(points: list[Point], extractions: dict[str, dict]) -> list[list[str]]:
    """One row per run with an extraction: its bits beside memorisable, extractable and chance
    accuracy (overall); a run not among the finished points shows its bits as a dash."""
    by_id = {p.run_id: p for p in points}
    rows = []
    for run_id, r in sorted(extractions.items(), key=lambda kv: kv[1].get("name") or kv[0]):
        p = by_id.get(run_id)
        f = r["finetune"]
        how = (
            f"LoRA q/v {f['qv_rank']}, emb {f['embedding_rank']}"
            if f["method"] == "lora"
            else "full"
        )
        rows.append(
            [
                r.get("name") or run_id,
                _dataset_label(r),
                "—" if p is None else f"{p.bits:,.0f}",
                "—" if p is None else f"{p.R:.3f}",
                _pct(r["memorisable"]["overall"]),
                _pct(r["extractable"]["overall"]),
                _pct(r["chance"]["overall"]),
                f"{r['extractable']['n_people']:,}",
                f"{how}, {f['steps']:,} steps",
            ]
        )
    return rows


def _dataset_label(r: dict) -> str:
    """The probed dataset: its kind, its variant when it has one, N."""
    variant = (r.get("dataset") or {}).get("variant")
    return f"{r['kind']}{f' ({variant})' if variant else ''} N={r['n_people']:,}"


_EXTRACTION_NOTE = (
    "Memorisable: greedy exact match of each value after its training-style prefix (the "
    "measure's recall). Extractable: exact-match answers to QA about the held-out half of the "
    "people after fine-tuning a copy of the model on the other half's QA pairs (`kcap "
    "extract`). Chance: the most common answer's frequency among the held-out people. All "
    "averaged over bioS's five attributes (or bioD's K)."
)


def relative_to(path: str | Path, folder: Path) -> str:
    """``path`` as seen from ``folder`` (a report names its inputs relative to where it is
    written, never by a machine's absolute path)."""
    return Path(os.path.relpath(Path(path).resolve(), folder.resolve())).as_posix()


def _status_counts(db: str | Path) -> dict[str, int]:
    if not Path(db).is_file():
        return {}
    with ResultsStore(db) as store:
        counts: dict[str, int] = defaultdict(int)
        for rec in store.list_runs():
            counts[rec.state] += 1  # an interrupted run is not a failed one
    return dict(counts)


def _verdict_class(verdict: str) -> str:
    return "v-" + verdict.replace(" ", "-")


def _write_html(
    out, title, stamp, db, status, findings, laws, figures, slugs, points, extractions
) -> None:
    h = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_SCRIPT}</script></head><body>",
        f"<h1>{_e(title)}</h1>",
    ]
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status.items())) or "no runs"
    h.append(
        f"<p>Results store <code>{_e(db)}</code>: {_e(counts)}. Generated {stamp}. "
        "Re-creating Allen-Zhu &amp; Li, <i>Physics of Language Models 3.3: Knowledge "
        "Capacity Scaling Laws</i>.</p>"
    )
    h.append('<h2 id="results">The twelve results</h2>')
    h.append(
        '<table id="results-table"><thead><tr><th>#</th><th>the paper\'s claim</th>'
        "<th>our figure</th><th>scale</th><th>verdict</th></tr></thead><tbody>"
    )
    for claim, f in findings:
        fig = f'<br><a href="#fig-{_e(f.figure)}">figure</a>' if f.figure in slugs else ""
        h.append(
            f'<tr data-result="{claim.id}"><td class="num">{claim.id}</td>'
            f"<td><b>{_e(claim.title)}</b>: {_e(claim.claim)} <small>({_e(claim.figure)}; "
            f"recipe <code>configs/recipes/{_e(claim.recipe)}-*.yaml</code>)</small></td>"
            f"<td>{_e(f.measured)}{fig}</td><td>{_e(f.scale)}</td>"
            f'<td><span class="verdict {_verdict_class(f.verdict)}">{_e(f.verdict)}</span>'
            f'<div class="detail">{_e(f.detail)}</div></td></tr>'
        )
    h.append("</tbody></table>")
    h.append('<h2 id="laws">Capacity laws</h2>')
    if laws:
        h.append(
            '<table id="laws-table"><thead><tr>'
            + "".join(f"<th>{_e(c)}</th>" for c in _LAW_HEAD)
            + "</tr></thead><tbody>"
        )
        for law in laws:
            cells = _law_cells(law)
            h.append(
                "<tr>"
                + "".join(
                    f'<td class="num">{_e(c)}</td>'
                    if i in (1, 4, 5, 6, 7, 9)
                    else f"<td>{_e(c)}</td>"
                    for i, c in enumerate(cells)
                )
                + "</tr>"
            )
        h.append("</tbody></table>")
        h += [f'<p class="warning">Warning: {_e(note)}</p>' for note in mixed_notes(laws)]
        h.append('<h3 id="models">Models</h3>')
        h.append(f"<p>{_e(_MODELS_NOTE)}</p>")
        h.append(
            '<table id="models-table"><thead><tr>'
            + "".join(f"<th>{_e(c)}</th>" for c in _MODEL_HEAD)
            + "</tr></thead><tbody>"
        )
        for row in _model_rows(laws):
            *cells, verdict = row
            h.append(
                "<tr>"
                + "".join(
                    f'<td class="num">{_e(c)}</td>' if i in (4, 7, 8) else f"<td>{_e(c)}</td>"
                    for i, c in enumerate(cells)
                )
                + f"<td>{_e(verdict.replace('**', ''))}</td></tr>"
            )
        h.append("</tbody></table>")
    else:
        h.append(
            "<p>No finished runs yet: run <code>kcap sweep</code> with a recipe from "
            "<code>configs/recipes/</code>.</p>"
        )
    h.append('<h2 id="figures">Figures</h2>')
    for fig in figures:
        h.append(
            f'<figure id="fig-{_e(fig.slug)}" data-figure="{_e(fig.slug)}">'
            f'<img src="{FIGURES}/{_e(fig.slug)}.svg" alt="{_e(fig.title)}">'
            f"<figcaption><b>{_e(fig.title)}.</b> {_e(fig.caption)} "
            f'(<a href="{FIGURES}/{_e(fig.slug)}.png">PNG</a>, '
            f'<a href="{FIGURES}/{_e(fig.slug)}.svg">SVG</a>)</figcaption></figure>'
        )
    h.append('<h2 id="runs">Runs</h2>')
    if points:
        h.append(
            f"<details><summary>{len(points)} finished runs</summary>"
            "<table><thead><tr><th>name</th><th>family</th><th>exposures</th><th>arch</th>"
            "<th>N</th><th>P</th><th>bits</th><th>R</th><th>R_max</th><th>recall</th>"
            "<th>memorisable</th><th>extractable (chance)</th></tr></thead><tbody>"
        )
        for p in sorted(points, key=lambda p: (p.family, p.exposures, p.arch, p.n, p.P)):
            r = extractions.get(p.run_id)
            if r is None:
                mem = ext = "—"
            else:
                mem = _pct(r["memorisable"]["overall"])
                ext = f"{_pct(r['extractable']['overall'])} ({_pct(r['chance']['overall'])})"
            h.append(
                f"<tr><td><code>{_e(p.name)}</code></td><td>{_e(p.family)}</td>"
                f'<td class="num">{p.exposures}</td><td>{_e(p.arch)}</td>'
                f'<td class="num">{p.n:,}</td><td class="num">{p.P:,}</td>'
                f'<td class="num">{p.bits:,.0f}</td><td class="num">{p.R:.3f}</td>'
                f'<td class="num">{p.R_max:.3f}</td><td class="num">{p.recall:.1%}</td>'
                f'<td class="num">{mem}</td><td class="num">{_e(ext)}</td></tr>'
            )
        h.append("</tbody></table></details>")
    else:
        h.append("<p>none</p>")
    if extractions:
        h.append('<h2 id="extraction">Knowledge extraction</h2>')
        h.append(f"<p>{_e(_EXTRACTION_NOTE)}</p>")
        h.append(
            '<table id="extraction-table"><thead><tr>'
            + "".join(f"<th>{_e(c)}</th>" for c in _EXTRACTION_HEAD)
            + "</tr></thead><tbody>"
        )
        for row in _extraction_rows(points, extractions):
            h.append(
                "<tr>"
                + "".join(
                    f"<td>{_e(c)}</td>" if i in (0, 1, 8) else f'<td class="num">{_e(c)}</td>'
                    for i, c in enumerate(row)
                )
                + "</tr>"
            )
        h.append("</tbody></table>")
    h.append('<h2 id="method">Method</h2>')
    h.append(f"<p>{_e(_METHOD)}</p>")
    h.append("</body></html>")
    (out / "index.html").write_text("\n".join(h) + "\n")


_MODELS_NOTE = (
    "Each model (one shape, one seed pair: dataset/training) on one data setting: the most bits"
    " it stored at each N (the best over learning rates and the like), when memorisation began "
    "in that run (the exposures seen at the first in-training measurement holding 10% of the "
    "most it held, '≤' where that was the first measurement; — without measurements, or when it"
    " never held 1% of its data), its capacity C (the most at any N) over P and over the "
    "parameters outside the embedding and head (the embedding is up to half of P at lab scale),"
    " and whether C is a capacity. C counts as one when the model was shown more than it stored"
    " and its bits stopped moving: among the datasets it was over-filled with (stored less than"
    " 90% of), the largest held within 10% (both ways) of the most it stored on a smaller one. "
    "C is the peak, as the paper's: a model may hold more of a dataset about its size than of "
    "the larger ones on its plateau. Bits that fall on larger data are a learning limit "
    "(memorisation starting later on more people), bits still rising say nothing yet, and a "
    "model that stored (nearly) all of every dataset was limited by the data."
)

_METHOD = (
    "Bits are the paper's lower bound (Definitions 4.1/4.3) from summed span losses; P counts "
    "every parameter once except embedding rows of tokens the data never uses. Runs are grouped"
    " by dataset family, exposures and architecture; runs differing only in learning rate, "
    "batch or weight decay (or, for quantized runs, in the quantizer) keep the best. Peak R is "
    "the largest bits/P of any run. A model is at capacity on a dataset setting (bioD: one K, "
    "C, D, L, T) when some dataset of that setting held more than 1/0.9 times the most bits it "
    "stored and its bits stopped moving: among the datasets it was over-filled with (stored "
    "less than 90% of), the largest held within 10% (both ways) of the most it stored on a "
    "smaller one; the law's R is the median of capacity/P over those models. Intervals say what"
    " they are over: the range over seeds, each fitted on the same models; with one seed, a 95%"
    " bootstrap over models (not seeds) or the range of two models; one model has none (—). "
    "Peaks of two groups are compared only at N both ran where neither stored 90% of the data "
    "or more. Verdicts: 'reproduced' when every check holds; 'not reproduced' when a main check"
    " fails; 'partly' when a secondary check fails or could not be made; 'inconclusive' when a "
    "main check could not be made: runs of a sub-setting missing, no comparable N, a ratio from"
    f" fewer than {MIN_RATIO_SEEDS} seeds, or a threshold inside the interval (not "
    "distinguishable). '≥ 2' passes at 1.9 and '≤ 2.3' at 2.4."
)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _write_markdown(
    out, title, stamp, db, status, findings, laws, figures, slugs, points, extractions
) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status.items())) or "no runs"
    md = [
        f"# {title}",
        "",
        f"Results store `{db}`: {counts}. Generated {stamp}.",
        "",
        "## The twelve results",
        "",
        _md_row(["#", "the paper's claim", "our figure", "scale", "verdict"]),
        _md_row(["---"] * 5),
    ]
    for claim, f in findings:
        md.append(
            _md_row(
                [
                    str(claim.id),
                    f"**{claim.title}**: {claim.claim} ({claim.figure})",
                    f.measured,
                    f.scale,
                    f"**{f.verdict}** — {f.detail}",
                ]
            )
        )
    md += ["", "## Capacity laws", ""]
    if laws:
        md += [_md_row(_LAW_HEAD), _md_row(["---"] * len(_LAW_HEAD))]
        md += [_md_row(_law_cells(law)) for law in laws]
        md += [line for note in mixed_notes(laws) for line in ("", f"**Warning**: {note}")]
        md += ["", "### Models", "", _MODELS_NOTE, ""]
        md += [_md_row(_MODEL_HEAD), _md_row(["---"] * len(_MODEL_HEAD))]
        md += [_md_row(row) for row in _model_rows(laws)]
    else:
        md.append("No finished runs yet.")
    md += ["", "## Figures", ""]
    for fig in figures:
        md += [
            f"### {fig.title}",
            "",
            f"![{fig.title}]({FIGURES}/{fig.slug}.png)",
            "",
            fig.caption,
            "",
        ]
    if extractions:
        md += ["## Knowledge extraction", "", _EXTRACTION_NOTE, ""]
        md += [_md_row(_EXTRACTION_HEAD), _md_row(["---"] * len(_EXTRACTION_HEAD))]
        md += [_md_row(row) for row in _extraction_rows(points, extractions)]
        md.append("")
    md += ["## Method", "", _METHOD, ""]
    (out / "report.md").write_text("\n".join(md))
