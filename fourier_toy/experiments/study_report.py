"""study.json, study.md and the study's figures, from `study.build`'s summary.

study.md: the claim x regime verdict table, then per regime the test accuracy of each condition
(mean +- sd over seeds), the mechanism statistics of the featured conditions, dim null(M) of every
filter and the wall time of a run. Figures (figures/):

    study_verdicts.png    claim x regime, coloured by verdict
    study_test_acc.png    test accuracy by regime and condition (bars: mean, whiskers: min-max)
    study_division.png    attention's and the MLPs' high-band share of module-logit energy
    study_table1.png      the four Table 1 accuracies of the first featured condition, beside GPT-2-XL's
"""

from __future__ import annotations

import statistics
from pathlib import Path

from fourier_toy.experiments import claims
from fourier_toy.experiments import paper
from fourier_toy.runs.files import atomic_write_json, atomic_write_text

FIGURES = "figures"
STUDY_JSON, STUDY_MD = "study.json", "study.md"
NOT_RUN = "not run"  # the verdict cell of a claim none of whose checks' conditions a regime ran
VERDICT_COLORS = {claims.REPRODUCED: "#4caf50", claims.PARTLY: "#cddc39", claims.INCONCLUSIVE: "#ffc107",
                  claims.NOT_REPRODUCED: "#e57373", claims.NOT_MEASURABLE: "#bdbdbd", NOT_RUN: "#f5f5f5"}
TABLE1_STATS = (("MLP", "low"), ("ATTN", "low"), ("ATTN", "high"), ("MLP", "high"))


def _ms(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _f(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows), ""]


def _check_text(check: dict) -> str:
    vals = [v for v in check["values"] if v is not None]
    mean = f"{statistics.mean(vals):.3f}" if vals else "-"
    return f"{check['check']}: {check['outcome']} (mean {mean})"


def _first_featured(regime: dict) -> str | None:
    return next((c for c in claims.FEATURED if c in regime["conditions"]), None)


def markdown(summary: dict) -> str:
    regimes = summary["regimes"]
    names = [r["name"] for r in regimes]
    lines = ["# Regime study", "",
             f"Directory `{summary['dir']}`, preset `{summary['preset']}`. Verdicts from the claims registry "
             f"(claims.py, {summary['confidence']:.0%} t intervals over seeds), judged per regime on the conditions "
             f"it ran; \"{NOT_RUN}\" marks a claim none of whose conditions ran there.", "",
             "## Verdicts", ""]
    lines += _table(["claim", *names], [[c.title.split(":")[0], *(r["claims"][c.id]["verdict"] for r in regimes)]
                                        for c in claims.CLAIMS])
    lines += ["## Regimes", ""]
    for r in regimes:
        set_text = ", ".join(f"`{k} = {v}`" for k, v in r["set"].items()) or "the base point"
        lines += [f"### {r['name']}", "", f"Sets {set_text}." + (f" {r['missing_runs']} runs missing or undiagnosed."
                                                                  if r["missing_runs"] else ""), ""]
        rows = []
        for cond, c in r["conditions"].items():
            rows.append([cond, c["n_seeds"], _ms(c["test_acc"]), _ms(c["train_acc"]), _f(c["attn_high"]),
                         _f(c["mlp_high"]), " / ".join(_f(v, 0) for v in c["dim_null"].values()) + f" of {c['d_model']}",
                         _f(c["seconds"], 1)])
        lines += _table(["condition", "seeds", "test acc", "train acc", "attn high share", "MLP high share",
                         "dim null(M): low-band / high-band filter / period-2 pass, of d_model", "s per run"], rows)
        judged = [(cid, j) for cid, j in r["claims"].items() if j["verdict"] != NOT_RUN]
        lines += [f"- **{claims.BY_ID[cid].title.split(':')[0]}**: {j['verdict']}; "
                  + "; ".join(_check_text(ch) for ch in j["checks"]) for cid, j in judged]
        lines.append("")
    return "\n".join(lines)


def figures(summary: dict, out: Path) -> None:
    from fourier_toy.analysis import plots

    fig_dir = out / FIGURES
    fig_dir.mkdir(parents=True, exist_ok=True)
    regimes = summary["regimes"]
    names = [r["name"] for r in regimes]
    cells = [[(r["claims"][c.id]["verdict"], r["claims"][c.id]["verdict"]) for r in regimes] for c in claims.CLAIMS]
    plots.plot_label_grid([c.title.split(":")[0] for c in claims.CLAIMS], names, cells, VERDICT_COLORS,
                          fig_dir / "study_verdicts.png", title="claim x regime verdicts")
    conds = [c for c in dict.fromkeys(k for r in regimes for k in r["conditions"])]
    plots.plot_grouped_bars(names, {c: [r["conditions"].get(c, {}).get("test_acc", []) for r in regimes] for c in conds},
                            fig_dir / "study_test_acc.png", "test accuracy", "test accuracy by regime and condition")

    def featured(r, key):
        c = _first_featured(r)
        return [] if c is None else [r["conditions"][c][key]]

    plots.plot_grouped_bars(names, {"attention": [featured(r, "attn_high") for r in regimes],
                                    "MLPs": [featured(r, "mlp_high") for r in regimes]},
                            fig_dir / "study_division.png", "high-band share of module-logit energy",
                            "division of labour (first featured condition; GPT-2: attention high, MLPs low)")
    series = {}
    for m, band in TABLE1_STATS:
        stat = f"acc_{m.lower()}_{band}_removed"
        series[f"{m} {band} removed"] = [[] if _first_featured(r) is None
                                         else r["conditions"][_first_featured(r)]["statistics"][stat] for r in regimes]
    gpt2 = paper.TABLE1
    plots.plot_grouped_bars(names, series, fig_dir / "study_table1.png", "test accuracy under the filter",
                            "Table 1 by regime (first featured condition); GPT-2-XL: "
                            + ", ".join(f"{m} {b} removed {gpt2[(m.lower(), b)][1]:.2f}" for m, b in TABLE1_STATS))


def write(out, summary: dict) -> None:
    out = Path(out)
    figures(summary, out)
    atomic_write_json(out / STUDY_JSON, summary)
    atomic_write_text(out / STUDY_MD, markdown(summary))
