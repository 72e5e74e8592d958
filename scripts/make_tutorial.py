"""Write docs/tutorial.ipynb, "How GPT-2 adds with Fourier features, on your laptop", without outputs.

    python scripts/make_tutorial.py            # rewrites docs/tutorial.ipynb
    python scripts/make_tutorial.py --check    # exits 1 if the notebook differs from this script

The notebook is kept in git without outputs; edit the cells here and regenerate.
tests/test_tutorial.py checks that the two agree, that the notebook has no outputs, that its code
uses only public names of fourier_toy, and executes it top to bottom.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


CELLS = [
    md("""
# How GPT-2 adds with Fourier features, on your laptop

Zhou, Fu, Sharan and Jia, *Pre-trained Large Language Models Use Fourier Features to Compute
Addition* (NeurIPS 2024), opened up GPT-2 while it adds two numbers and found:

- the embeddings of number tokens carry **Fourier features**: periodic components with periods
  2, 2.5, 5 and 10 along the number axis;
- the **MLPs** mostly approximate the answer's *magnitude* with **low frequencies**;
- **attention** mostly computes the answer *modulo* 2, 5 and 10 with **high frequencies**;
- a model trained from scratch lacks these features and adds worse; a randomly initialized model
  whose number embeddings are frozen to GPT-2's pre-trained ones learns the task.

This notebook rebuilds the story in miniature with `fourier_toy`: GPT-2-style transformers written
in numpy (2 layers, 128 dimensions instead of GPT-2-XL's 48 layers and 1,600), trained on a CPU
in well under a minute each, then examined with the paper's diagnostics. It runs top to bottom
in a few minutes; the first training compiles numba kernels (20-40 s), which are then cached.

A toy this small does not show every part of GPT-2's picture. Each section says what GPT-2 did
and what to compare; where the toy differs, the printed numbers say so.
"""),
    code("""
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

import fourier_toy as ft
from fourier_toy.analysis import plots     # figures: a report dict and a path -> PNG file
from fourier_toy.experiments import paper  # GPT-2's numbers from the paper, as data

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets; no bars are drawn
work = Path(tempfile.mkdtemp(prefix="fourier-toy-tutorial-"))  # the runs and figures go here
print("runs and figures in", work)


def show(png):
    \"\"\"Display a PNG written by one of the plots functions.\"\"\"
    display(Image(filename=str(png)))
"""),
    md("""
## 1. The task and its tokens

As GPT-2 has single tokens for the numbers "0" to "520", every number 0..p-1 here is one token,
'+' is token p and '=' is token p + 1. An example is the sequence `[a, '+', b, '=']`; the model
reads its logits over the p number tokens at '=' and must put a + b on top.

We take a, b <= 60, so p = 121. Since 60 is a multiple of 5, periods 2, 2.5, 5 and 10 fall on
whole frequencies of the number axis (the numbers 0..119). Each unordered pair appears once
(in an order drawn by the seed), split 80/10/10 into train, validation and test: the test pairs
are sums the model never sees during training.
"""),
    code("""
base = {"task.max_operand": 60, "model.d_model": 128, "train.batch_size": 256,
        "train.max_steps": 1000, "train.eval_every": 100}
cfg = ft.load_config("quick", base)
vocab = ft.Vocab(cfg.task.n_numbers)
print(f"p = {vocab.n_numbers} number tokens, '+' = {vocab.plus}, '=' = {vocab.equals}, vocabulary {vocab.size}")
print("15 + 43 =  ->  tokens", vocab.encode([15], [43])[0].tolist(), " target", 15 + 43)

splits = ft.make_splits(cfg.task, cfg.seed)
for name, split in splits.items():
    print(f"{name:>5}: {len(split):5d} examples, e.g. {split.tokens[0].tolist()} -> {split.targets[0]}")
"""),
    md("""
Which (a, b) pairs fall in which split (each unordered pair appears in one order only):
"""),
    code("""
grid = np.full((cfg.task.max_operand + 1,) * 2, np.nan)
for i, split in enumerate(splits.values()):
    a, b = vocab.decode(split.tokens)
    grid[a, b] = i

fig, ax = plt.subplots(figsize=(5, 4.5))
im = ax.imshow(grid, origin="lower", cmap=plt.get_cmap("viridis", 3), vmin=-0.5, vmax=2.5)
cbar = fig.colorbar(im, ax=ax, ticks=[0, 1, 2])
cbar.ax.set_yticklabels(list(splits))
ax.set_xlabel("b")
ax.set_ylabel("a")
ax.set_title("the pairs (a, b) of each split")
plt.show()
"""),
    md("""
## 2. Two toys: learned number embeddings vs frozen Fourier ones

Both models are the same GPT-2 (2 layers, 4 heads, d_model 128, GPT-2's initialization, AdamW),
trained on the same data for the same 1,000 steps of 256 examples. Only the embedding rows of
the number tokens differ:

- **learned**: GPT-2's random initialization, trained with everything else (the paper's "from
  scratch");
- **fourier_frozen**: the number n is embedded as cos and sin of 2&pi;n/T for T = 2, 2.5, 5, 10,
  plus a linear ramp for its magnitude, mapped to 128 dimensions by a random orthonormal map and
  **frozen**. This stands in for the paper's experiment that froze GPT-2's pre-trained number
  embeddings inside a randomly initialized model.

`ft.train` writes a run directory (config, metrics, weights); `ft.load_run` opens it. We open the
runs on the numpy backend for the analysis: hooks then run op by op with nothing to compile.
"""),
    code("""
conditions = {
    "learned": {"embedding.kind": "learned"},
    "fourier_frozen": {"embedding.kind": "fourier", "embedding.freeze": True},
}
results, runs = {}, {}
for name, values in conditions.items():
    results[name] = ft.train(ft.load_config("quick", {**base, **values}), work / name, progress=False)
    print(results[name].summary_line())
    runs[name] = ft.load_run(work / name, backend="numpy")

model, _ = ft.build_model(runs["learned"].cfg)
print(f"{model.layout.size:,} parameters per model")
"""),
    code("""
fig, ax = plt.subplots(figsize=(7, 3.8))
for (name, result), color in zip(results.items(), ["tab:orange", "tab:blue"]):
    steps = [r["step"] for r in result.history]
    for split, style in (("train", "--"), ("test", "-")):
        ax.plot(steps, [r[split]["acc"] for r in result.history], style, color=color, label=f"{name}, {split}")
ax.set_xlabel("step")
ax.set_ylabel("exact accuracy")
ax.set_ylim(-0.02, 1.02)
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
ax.set_title("training curves (dashed: train pairs, solid: unseen test pairs)")
plt.show()

test_acc = {name: ft.evaluate(run.model, run.splits["test"]) for name, run in runs.items()}
for name, r in test_acc.items():
    print(f"{name:>14}: test acc {r['acc']:.3f}  (within +-2 {r['acc_pm2']:.3f}, within +-10 {r['acc_pm10']:.3f})")
print(f"GPT-2-small from scratch: {paper.ACCURACY['gpt2_small_from_scratch']:.3f}; "
      f"with frozen pre-trained number embeddings: {paper.ACCURACY['gpt2_small_frozen_pretrained_embeddings']:.3f}")
"""),
    md("""
The paper's finding is the gap between the two: a random model learns addition when its number
embeddings already carry Fourier features. Compare the test accuracies above with GPT-2-small's
and with the train curves: a model that fits its training pairs but not the test pairs has
memorized sums rather than learned to add. This is one seed at one small budget;
`fourier-toy reproduce` (last section) trains five seeds per condition.

## 3. Embedding spectra

The paper's Figure 3 takes GPT-2's number embeddings, one row per number, and Fourier-transforms
each dimension along the number axis: the mean magnitude has outliers at periods 2, 2.5, 5 and
10. `ft.spectrum_report` does the same for the number rows of a run's embedding (wte) and of its
unembedding (W_U, untied here), on the exact real DFT of the numbers 0..119, and flags the
frequencies that stand out from their neighbours (tested against shuffled rows).

The frozen Fourier rows show the four periods **by construction**: that panel checks the tool,
it is not a finding. The trained matrices are the ones to read: W_U of both models, and the
learned model's wte, where GPT-2 trained from scratch had no such outliers.
"""),
    code("""
spectra = {name: ft.spectrum_report(run) for name, run in runs.items()}
for name, rep in spectra.items():
    for m in rep["matrices"]:
        key = [f"{r['period']:g}" for r in m["key_periods"] if r["outlier"]]
        print(f"{name:>14} {m['name']:>4}: {len(m['outliers']):2d} outlier frequencies; "
              f"of the periods 2, 2.5, 5, 10 among them: {', '.join(key) or 'none'}")
show(plots.plot_spectra(spectra, work / "embedding_spectra.png"))
"""),
    md("""
## 4. The logit lens

Apply the final LayerNorm and the unembedding to the residual stream at '=' after each block, as
if the model stopped there. In GPT-2-XL (the paper's Figure 1a) the answer is first right
*approximately* (within +-10, then +-2) and only in later layers *exactly*: the magnitude comes
before the units digit. This toy has two blocks, so the lens has two points per model; with so
few layers the two curves may rise together.
"""),
    code("""
lens = {name: ft.lens_report(run) for name, run in runs.items()}
for name, rep in lens.items():
    for x in rep["lens"]:
        print(f"{name:>14}, after block {x['layer']}: exact {x['acc']:.3f}, "
              f"within +-2 {x['acc_pm2']:.3f}, within +-10 {x['acc_pm10']:.3f}")
show(plots.plot_lenses(lens, work / "lens.png"))
"""),
    md("""
## 5. Module logits: which module writes which frequencies

Multiply each attention and MLP output at '=' by the unembedding W_U: that is the module's own
vote over the numbers (its *logits*). Their Fourier transform along the number axis shows which
frequencies each module writes. The high band is k >= tau, with tau = ceil(50 N / 520), the
paper's tau = 50 at N = 520 scaled to our N = 120: periods of about 10 and below, the ones that
encode a + b mod 2, 5 and 10.

In GPT-2-XL the attention logits are almost only high-frequency, while the MLP logits also carry
strong low frequencies (the magnitude). Below: each layer's share of the module logits' energy
in the high band, and the spectra of the Fourier-frozen model as a heat map.
"""),
    code("""
for name, rep in lens.items():
    for m in rep["modules"]:
        verdict = "attention higher, as in GPT-2" if m["attn_high"] > m["mlp_high"] else "MLP higher: unlike GPT-2"
        print(f"{name:>14}, layer {m['layer']}: high-band share attn {m['attn_high']:.2f}, "
              f"mlp {m['mlp_high']:.2f} ({verdict})")
show(plots.plot_module_spectra(lens["fourier_frozen"], work / "module_spectra.png"))
"""),
    md("""
In a two-layer toy this division of labour need not appear, and the two models may differ: a
module can write as much high frequency as the other, or more. Read the lines above for what
this run shows; `fourier-toy reproduce` (last section) tests it over five seeds.

## 6. Null-space filters: the paper's Table 1

The paper's filter removes one frequency band from a module's output: it replaces the output x
by the closest y whose logits W_U y have no energy in that band (the projection of x onto the
null space of M = B F W_U, with F the Fourier basis and B selecting the band), in every layer.
Table 1 removes the low or the high band from the attention outputs, the MLP outputs or both, and
measures accuracy. In GPT-2-XL, removing the MLPs' low frequencies hurts and removing
attention's high frequencies hurts, while the opposite removals barely matter.

One caveat the toy has and GPT-2-XL does not: the filter needs a hidden space wider than what it
removes. `dim null` below is what is left of the 128 dimensions; removing the high band (about
100 Fourier rows) leaves few, so those filters erase most of a module's output whatever the model
computes, which makes every high-band row look harmful.
"""),
    code("""
run = runs["fourier_frozen"]
ablate = ft.ablate_report(run)
gpt2_key = {"none": "none", "ATTN & MLP": "attn+mlp", "ATTN": "attn", "MLP": "mlp"}
gpt2_acc = [paper.TABLE1[(gpt2_key[r["modules"]], r["removed"])][1] for r in ablate["rows"]]


def share(v):
    return "   -" if v is None else f"{v:4.2f}"


print(f"fourier_frozen, test split (n = {ablate['n']}), tau = {ablate['tau']}, d = {ablate['d']}")
print(f"{'filtered':>10} {'removed':>7}  {'toy acc':>7}  {'GPT-2-XL':>8}  {'dim null':>8}  "
      f"{'errors':>6}  {'x10':>4}  {'|e|<6':>5}")
for r, ref in zip(ablate["rows"], gpt2_acc):
    e = r["errors"]
    print(f"{r['modules']:>10} {r['removed']:>7}  {r['acc']:7.3f}  {ref:8.4f}  {r['dim_null']:8d}  "
          f"{e['n_errors']:6d}  {share(e['frac_multiple_of_10'])}  {share(e['frac_below_6']):>5}")

acc = {(r["modules"], r["removed"]): r["acc"] for r in ablate["rows"]}
for hurt, spared, what in ((("MLP", "low"), ("ATTN", "low"), "low band"), (("ATTN", "high"), ("MLP", "high"), "high band")):
    same = acc[hurt] < acc[spared]
    print(f"{what} removed: {hurt[0]} {acc[hurt]:.3f} vs {spared[0]} {acc[spared]:.3f} "
          f"({'lower, as in GPT-2' if same else 'not lower: unlike GPT-2'})")

reference = [{"modules": r["modules"], "removed": r["removed"], "acc": a} for r, a in zip(ablate["rows"], gpt2_acc)]
show(plots.plot_ablation(ablate, work / "table1.png", reference=reference))
"""),
    md("""
The kind of error tells what was lost. In GPT-2-XL, with the MLPs' low frequencies removed
**every error was a multiple of 10** (the units digit, computed by attention's high frequencies,
survives; the magnitude is lost); with attention's high frequencies removed **every error was
below 6** in size (the magnitude survives, the units digit is lost). The histograms show
(a + b) - prediction under each filter: red bars are multiples of 10, green ones below 6.
"""),
    code("""
rows = {(r["modules"], r["removed"]): r for r in ablate["rows"]}
mlp_low, attn_high = rows[("MLP", "low")], rows[("ATTN", "high")]
print(f"MLP low removed:   share of errors that are multiples of 10 = {share(mlp_low['errors']['frac_multiple_of_10'])}"
      f"   (GPT-2-XL: {paper.ERRORS_MLP_LOW_REMOVED_MULTIPLE_OF_10:.2f})")
print(f"ATTN high removed: share of errors below 6                = {share(attn_high['errors']['frac_below_6'])}"
      f"   (GPT-2-XL: {paper.ERRORS_ATTN_HIGH_REMOVED_BELOW_6:.2f}; dim null here {attn_high['dim_null']})")

single = ablate["single_pass"][0]
print(f"keeping only period {single['period']:g} in every module: parity of the prediction right in "
      f"{single['parity_acc']:.3f} of test examples (GPT-2-XL: {paper.SINGLE_PASS_PARITY:.4f}; "
      f"dim null {single['dim_null']})")
show(plots.plot_errors(ablate, work / "errors.png", max_abs=40))
"""),
    md("""
The multiples-of-10 pattern needs only the low band removed (few rows, a wide null space), so it
is the easier one for a small model to show. The below-6 pattern rests on a filter that leaves
only a few dimensions here; where it does not appear, the toy's filter is too blunt to say. The
same holds for the single-pass filter, which keeps one of 60 frequencies and so leaves even fewer
dimensions: a parity accuracy near 0.5 is chance.

## 7. The whole experiment

This notebook trained one seed of two conditions. The command line runs the paper's experiments
in toy form: five embedding conditions (learned; Fourier-initialized, frozen or trained;
transplanted pre-trained rows, frozen or trained) times five seeds, every diagnostic above on
each run, and each of the paper's claims judged against GPT-2's number with a 95% interval over
the seeds:

```sh
fourier-toy reproduce --preset quick          # a few minutes on 2 cores
```

It writes `reproduce-quick/report.html`, one page to open in a browser (and `report.md`,
`summary.json` and the figures). From Python: `ft.reproduce(preset="quick", out="reproduce-quick")`.
The single-run diagnostics used here are also commands: `fourier-toy spectrum | lens | ablate |
probe RUN`, with the runs of this notebook in the folder printed by the first cell; README.md's
"Python API" section lists the rest of the `ft` functions.
"""),
]


def build():
    nb = new_notebook(cells=CELLS)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    # Stable cell ids, so regenerating the notebook leaves git's diff empty.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare docs/tutorial.ipynb with this script")
    args = parser.parse_args(argv)
    text = nbformat.writes(build()) + "\n"
    if args.check:
        same = NOTEBOOK.is_file() and NOTEBOOK.read_text(encoding="utf-8") == text
        print(f"{NOTEBOOK}: {'up to date' if same else 'differs; run python scripts/make_tutorial.py'}")
        return 0 if same else 1
    NOTEBOOK.write_text(text, encoding="utf-8")
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
