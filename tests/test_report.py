"""The report: every result row and every figure, in HTML and markdown, rendered by Chromium."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import synthetic_runs as syn
from kcap.cli.main import app
from kcap.experiments.paper import CLAIMS
from kcap.experiments.report import write_report
from kcap.experiments.store import ResultsStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    syn.full_store(tmp / "r.db")
    write_report(tmp / "r.db", tmp / "out")
    return tmp / "out"


def _figures(html: str) -> list[str]:
    return re.findall(r'data-figure="([^"]+)"', html)


def test_report_names_its_store_relative_to_itself(report_dir):
    """Reports are committed: they name their inputs relative to where they are written."""
    md = (report_dir / "report.md").read_text()
    html = (report_dir / "index.html").read_text()
    assert "Results store `../r.db`:" in md and "<code>../r.db</code>" in html
    assert str(report_dir.parent) not in md + html


def test_every_result_row_and_every_figure(report_dir):
    html = (report_dir / "index.html").read_text()
    md = (report_dir / "report.md").read_text()
    assert re.findall(r'data-result="(\d+)"', html) == [str(c.id) for c in CLAIMS]
    for claim in CLAIMS:
        assert claim.title in html and f"| {claim.id} | **{claim.title}**" in md
    figures = _figures(html)
    expected = {
        "capacity-bios-e1000-gpt2",
        "capacity-bios-e100-gpt2",
        "capacity-bios-e100-llama",
        "capacity-bios-e100-gpt2-no-mlp",
        "capacity-bios-simple-e1000-gpt2",
        "capacity-biod-e1000-gpt2",
        "architectures-e1000",
        "architectures-e100",
        "training",
        "components",
    }
    assert set(figures) == expected
    for slug in figures:
        for fmt in ("png", "svg"):
            assert (report_dir / "figures" / f"{slug}.{fmt}").stat().st_size > 1000
        assert f"figures/{slug}.svg" in html and f"figures/{slug}.png" in md
    # no network: nothing is loaded from anywhere but the folder itself
    assert not re.search(r"(src|href)=\"(https?:)?//", html)


def _verdict(html: str, result: int) -> str:
    """The verdict word of one result row (the span's text, not a substring of another)."""
    row = html.split(f'data-result="{result}"')[1].split("</tr>")[0]
    return re.search(r'<span class="verdict [^"]+">([^<]+)</span>', row).group(1)


def test_verdicts_carry_numbers(report_dir):
    html = (report_dir / "index.html").read_text()
    row1 = html.split('data-result="1"')[1].split("</tr>")[0]
    assert _verdict(html, 1) == "reproduced" and "2.1" in row1  # the synthetic law is R = 2.1
    assert "range over 2 seeds" in row1  # two seeds: the interval and what it is over
    assert _verdict(html, 9) == "not yet measured"


def test_every_model_says_why_it_is_or_is_not_at_capacity(tmp_path):
    """The models table: each model's bits at every N and the reason for its verdict, in both
    the page and the markdown, so a reader can check the plateau rule on the figures."""
    with ResultsStore(tmp_path / "r.db") as store:
        syn.late_onset(store)  # a learning limit: bits up, then down by a third
        for n, R in ((3200, 1.0), (6400, 0.98)):  # a plateau; 8k parameters outside embeddings
            syn.record(
                store,
                n=n,
                P=20_000,
                R=R,
                biod=(8, 1, 128, 1, 128),
                exposures=100,
                non_embedding=8_000,
            )
    write_report(tmp_path / "r.db", tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    html = (tmp_path / "out" / "index.html").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| bioD, 100 exp., gpt2 |")]
    assert len(rows) == 2
    held, fell = sorted(rows, key=lambda r: "20,000" not in r)
    assert "3,200: 20.0k · 6,400: 19.6k" in held
    assert "**yes**: at capacity: N = 6,400 held within 10% of the most on a smaller" in held
    assert "no: bits fell: N = 6,400 held" in fell and "learning limit" in fell
    assert "1,600: 70 · 3,200: 80 · 6,400: 100" in fell  # memorisation began later and later
    assert "3,200: ≤ 10 · 6,400: ≤ 10" in held  # by the first measurement
    assert "| 1.000 | 2.500 |" in held and "| — |" in fell  # C/P, C per non-embedding param
    table = html.split('id="models-table"')[1].split("</table>")[0]
    assert table.count("<tr>") == 3  # the header and two models
    assert "yes: at capacity" in table and "a learning limit" in table


def test_a_law_over_two_recipe_versions_is_flagged(tmp_path):
    """v2's GPT2 and v3's (more rotated dims at the same width) in one store: one `gpt2` law,
    and a warning under the laws table of the page and of the markdown, and on the console;
    none for one version."""
    with ResultsStore(tmp_path / "r.db") as store:
        for n in (800, 1600):
            syn.record(store, n=n, P=24_000, R=1.0, biod=(8, 1, 128, 1, 128))
            syn.record(store, n=n, P=32_000, R=1.0, biod=(8, 1, 128, 1, 128), overrides={})
    write_report(tmp_path / "r.db", tmp_path / "one")
    assert "Warning" not in (tmp_path / "one" / "report.md").read_text()
    with ResultsStore(tmp_path / "r.db") as store:
        floor = {"rotary_min_dims": 16}
        syn.record(store, n=800, P=28_000, R=1.0, biod=(8, 1, 128, 1, 128), overrides=floor)
    out = CliRunner().invoke(
        app, ["report", str(tmp_path / "r.db"), "--out", str(tmp_path / "two")]
    )
    assert out.exit_code == 0, out.output
    md = (tmp_path / "two" / "report.md").read_text()
    html = (tmp_path / "two" / "index.html").read_text()
    warning = "bioD, 1000 exposures, gpt2 mixes models built with different scale settings"
    assert f"**Warning**: {warning} (none; rotary_min_dims=16)" in md
    assert md.count("**Warning**") == 1 and warning in html
    console = " ".join(out.stderr.split())  # the console says it too, on stderr
    assert console.count("warning:") == 1 and warning in console


def test_the_header_counts_interrupted_runs_apart_from_failed_ones(tmp_path):
    """A run stopped by SIGTERM resumes from its checkpoint: the header says interrupted."""
    with ResultsStore(tmp_path / "r.db") as store:
        syn.record(store, n=800, P=50_000, R=1.0)
        for run_id, error in (("a", "interrupted: SIGTERM"), ("b", "ValueError: boom")):
            store.start_run(run_id, name=run_id, config={}, manifest=None, run_dir=None)
            store.fail_run(run_id, error)
    write_report(tmp_path / "r.db", tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "`: 1 failed, 1 finished, 1 interrupted. Generated" in md


def test_empty_store_reports_not_yet_measured(tmp_path):
    with ResultsStore(tmp_path / "r.db"):
        pass
    out = CliRunner().invoke(app, ["report", str(tmp_path / "r.db"), "--out", str(tmp_path / "o")])
    assert out.exit_code == 0, out.output
    html = (tmp_path / "o" / "index.html").read_text()
    assert html.count(">not yet measured<") == len(CLAIMS)
    assert set(_figures(html)) == {"capacity", "architectures", "training", "components"}


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_page_renders_in_headless_chromium(report_dir, tmp_path):
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            (report_dir / "index.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    n = len(_figures((report_dir / "index.html").read_text()))
    assert f'data-figures="{n}"' in dom and f'data-figures-loaded="{n}"' in dom, dom[:500]
    assert 'class="missing"' not in dom
    assert len(re.findall(r'<tr data-result="\d+"', dom)) == len(CLAIMS)


def test_only_the_lab_probe_stands_in_for_bioS(tmp_path):
    """Result 3's runs on another bioD setting (R 2.0 there) share the bioD group but are not the
    probe: result 1 reads the probe's law (R 1.00), result 3 both settings."""
    from kcap.experiments.analysis import analyse, load_points
    from kcap.experiments.paper import LAB_PROBE, evaluate_all

    probe, other = (8, 1, 128, 1, 128), (4, 2, 128, 1, 128)
    setting = "bioD " + " ".join(f"{k}={v}" for k, v in zip("kcdlt", probe, strict=True))
    assert setting == LAB_PROBE
    root = Path(__file__).resolve().parents[1]
    shared = yaml.safe_load((root / "configs/recipes/shared/lab-probe.yaml").read_text())
    assert tuple(shared["dataset"][k] for k in "kcdlt") == probe
    with ResultsStore(tmp_path / "r.db") as store:
        for n in (800, 1600, 3200):
            syn.record(store, n=n, P=syn.SIZES[0], R=1.0, biod=probe)
            syn.record(store, n=n, P=syn.SIZES[0], R=2.0, biod=other)
    findings = {c.id: f for c, f in evaluate_all(analyse(load_points(tmp_path / "r.db")))}
    assert "R 1.00 [—] (one model, one seed)" in findings[1].measured, findings[1].measured
    assert "over 2 settings" in findings[3].measured, findings[3].measured
    assert "2 of 2 models at capacity" in findings[3].measured


def test_bioD_stands_in_for_bioS_where_a_store_has_no_bioS_runs(tmp_path):
    """The lab scale measures results 1 and 4-12 on a bioD probe: claims use it, and say so."""
    from kcap.experiments.analysis import analyse, load_points
    from kcap.experiments.paper import evaluate_all

    probe = (8, 1, 128, 1, 128)
    with ResultsStore(tmp_path / "r.db") as store:
        for P in syn.SIZES[:2]:
            for n in (800, 1600, 3200):
                syn.record(store, n=n, P=P, R=1.0, biod=probe)
                syn.record(store, n=n, P=P, R=0.5, biod=probe, exposures=100)
    findings = {c.id: f for c, f in evaluate_all(analyse(load_points(tmp_path / "r.db")))}
    for result in (1, 4):
        assert "stand-in for bioS" in findings[result].scale
        assert findings[result].verdict == "not reproduced"  # R = 1.0 < 2 and 0.5 < 1
    assert "R 1.00" in findings[1].measured and "R 0.50" in findings[4].measured
    assert "stand-in" not in findings[3].scale and findings[3].verdict != "not yet measured"
    assert findings[2].verdict == "not yet measured"  # bioS-simple has no stand-in
    # with bioS runs in the store, bioS is what the claims read
    with ResultsStore(tmp_path / "r.db") as store:
        syn.law_grid(store, 2.1)
    findings = {c.id: f for c, f in evaluate_all(analyse(load_points(tmp_path / "r.db")))}
    assert "stand-in" not in findings[1].scale and findings[1].verdict == "reproduced"


def test_a_group_that_stored_nothing_is_infinitely_below(tmp_path):
    """An architecture (or a junk mixture) that stored 0 bits is ∞× below its baseline; the
    finding says so instead of claiming there was nothing to compare."""
    from kcap.experiments.analysis import analyse, load_points
    from kcap.experiments.paper import evaluate_all

    probe = (8, 1, 128, 1, 128)
    with ResultsStore(tmp_path / "r.db") as store:
        for seed in (0, 1, 2):
            for n in (400, 800):
                kw = {"n": n, "P": 50_000, "biod": probe, "exposures": 100, "seed": seed}
                syn.record(store, R=0.3, **kw)
                syn.record(store, R=0.0, preset="llama-2-1", **kw)
    findings = {c.id: f for c, f in evaluate_all(analyse(load_points(tmp_path / "r.db")))}
    assert "GPT2/llama = ∞ [∞, ∞] (range over 3 paired seeds)" in findings[6].measured
    assert "✗ llama: up to 1.3× worse than GPT2 (GPT2/llama peak at N = 400, 800 ratio ∞" in (
        findings[6].detail
    )


def test_moe_runs_on_bioD_stand_in_for_bioS(tmp_path):
    """Result 9 finds the lab's bioD MoE runs (a claim with runs is never 'not yet measured'
    for want of looking at the right family)."""
    from kcap.experiments.analysis import analyse, load_points
    from kcap.experiments.paper import evaluate_all

    probe = (8, 1, 128, 1, 128)
    with ResultsStore(tmp_path / "r.db") as store:
        for seed in (0, 1, 2):
            for n in (800, 1600):
                kw = {"n": n, "biod": probe, "exposures": 100, "seed": seed}
                syn.record(store, P=50_000, R=0.3, preset="gpt2-2-2", **kw)
                moe = {"preset": "gpt2-2-2-moe32", "overrides": {"d_model": 50}}  # dense d 50
                syn.record(store, P=171_000, R=0.1, **moe, **kw)
    (finding,) = [f for c, f in evaluate_all(analyse(load_points(tmp_path / "r.db"))) if c.id == 9]
    assert "stand-in for bioS" in finding.scale
    # 3x below dense at 100 exposures, on three seeds: a main check fails, whatever else is missing
    assert "dense/MoE = 3.00" in finding.measured and finding.verdict == "not reproduced"


def test_architecture_bars_are_the_mean_of_each_seeds_peak_with_their_range(tmp_path):
    """No model at capacity (bits double from N = 400 to 800): GPT2's three seeds peak at
    R 0.2, 0.3 and 0.4, so its bar is 0.3 with the range [0.2, 0.4], not the best seed's 0.4;
    LLaMA's one seed (0.25) has no range. Both read over the N both ran at."""
    from kcap.experiments.analysis import analyse, load_points
    from kcap.experiments.report import architecture_bars

    probe, d32 = (8, 1, 128, 1, 128), {"d_model": 32, "n_head": 2}
    db = tmp_path / "r.db"
    with ResultsStore(db) as store:
        for seed, r in enumerate((0.2, 0.3, 0.4)):
            for n, share in ((400, 0.5), (800, 1.0)):
                kw = {"n": n, "P": 50_000, "exposures": 100, "biod": probe, "seed": seed}
                syn.record(store, R=r * share, preset="gpt2-2-2", overrides=d32, **kw)
        for n, share in ((400, 0.5), (800, 1.0)):
            kw = {"n": n, "P": 75_000, "exposures": 100, "biod": probe, "overrides": d32}
            syn.record(store, R=0.25 * share, preset="llama-2-2", **kw)
    bars, common = architecture_bars(analyse(load_points(db)), 100)
    assert common == {400, 800}
    by_arch = {label.split("\n")[0]: rest for label, *rest in bars}
    assert by_arch["gpt2"] == pytest.approx([0.3, 0.2, 0.4, False])
    assert by_arch["llama"] == pytest.approx([0.25, 0.25, 0.25, False])
