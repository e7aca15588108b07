"""Summarise a recorded bioR dataset written with `--keep-journal`: the acceptance figures
(the manifest's ``rewriting``, params, wall time) as JSON, and a few kept rewrites beside the
bioS biography each paraphrased as markdown.

    python benchmarks/bior_report.py DATA_DIR OUT_PREFIX [--samples 5] [--wall-s S]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kcap.data.bior import JOURNAL


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("prefix", type=Path)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--wall-s", type=float, default=None)
    args = ap.parse_args()
    manifest = json.loads((args.data / "manifest.json").read_text())
    lines = (args.data / JOURNAL).read_text().splitlines()
    header, records = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    rw = manifest["rewriting"]
    summary = {
        "dataset": str(args.data),
        "params": manifest["params"],
        "seed": manifest["seed"],
        "wall_seconds": args.wall_s,
        "seconds_per_try": None if args.wall_s is None else round(args.wall_s / rw["tries"], 2),
        "rewriting": rw,
        "tries_per_person": [r["tries"] for r in records],
        "kept_per_person": [len(r["texts"]) for r in records],
        "journal_header": header,
    }
    args.prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.prefix}-acceptance.json").write_text(json.dumps(summary, indent=2) + "\n")
    picked = [
        (r["person"], text, source)
        for r in records
        for text, source in zip(r["texts"], r["sources"], strict=True)
    ]
    step = max(len(picked) // max(args.samples, 1), 1)
    md = [
        f"# bioR samples: {manifest['params']['model']}",
        "",
        f"N = {manifest['params']['n']}, {manifest['params']['rewrites']} training rewrites + 1 "
        f"held out per person; accepted {rw['accepted']} of {rw['tries']} tries "
        f"({rw['acceptance_rate']:.1%}); {rw['fallback_people']} people fell back to bioS text.",
        "",
    ]
    for person, text, source in picked[::step][: args.samples]:
        md += [
            f"## person {person}",
            "",
            f"**source (bioS):** {source}",
            "",
            f"**rewrite:** {text}",
            "",
        ]
    Path(f"{args.prefix}-samples.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
