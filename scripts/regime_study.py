"""The regime study of docs/regimes.md, in one command: both study grids of scripts/study/, then the
headline table (claim x regime -> verdict over both) and, with --figures, the figures the doc shows.

    python scripts/regime_study.py --out studies [--workers 2 | --scheduler tcp://HOST:PORT] [--figures docs/regimes]

Each grid is a `fourier-toy study` (experiments/study.py) into OUT/<grid stem>: runs are trained and
diagnosed on local workers or a Dask cluster, and an interrupted study resumes where it stopped.
Writes OUT/headline.md and OUT/headline.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fourier_toy.errors import FourierToyError
from fourier_toy.experiments import claims
from fourier_toy.experiments.study import NOT_RUN, run_study
from fourier_toy.runs.files import atomic_write_bytes, atomic_write_json, atomic_write_text

GRIDS = sorted((Path(__file__).parent / "study").glob("*.toml"))


def headline(studies: dict[str, dict]) -> tuple[str, dict]:
    """Markdown and JSON of claim x regime verdicts over every study (regimes named "grid: regime")."""
    cols = [(stem, r) for stem, s in studies.items() for r in s["regimes"]]
    table = {c.id: {f"{stem}: {r['name']}": r["claims"][c.id]["verdict"] for stem, r in cols} for c in claims.CLAIMS}
    lines = ["| claim | " + " | ".join(f"{stem}: {r['name']}" for stem, r in cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for c in claims.CLAIMS:
        cells = [r["claims"][c.id]["verdict"] for _, r in cols]
        lines.append(f"| {c.title.split(':')[0]} | " + " | ".join("" if v == NOT_RUN else v for v in cells) + " |")
    return "\n".join(lines) + "\n", table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="studies")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--scheduler", metavar="tcp://HOST:PORT")
    ap.add_argument("--figures", metavar="DIR", help="also copy each study's figures to DIR/<grid stem>_<name>.png")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    args = ap.parse_args(argv)
    out = Path(args.out)
    try:
        studies = {g.stem: run_study(g, out / g.stem, workers=args.workers, scheduler=args.scheduler,
                                     progress=args.progress) for g in GRIDS}
    except FourierToyError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    text, table = headline(studies)
    atomic_write_text(out / "headline.md", text)
    atomic_write_json(out / "headline.json", table)
    if args.figures:
        dest = Path(args.figures)
        dest.mkdir(parents=True, exist_ok=True)
        for stem in studies:
            for png in sorted((out / stem / "figures").glob("study_*.png")):
                atomic_write_bytes(dest / f"{stem}_{png.name.removeprefix('study_')}", png.read_bytes())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
