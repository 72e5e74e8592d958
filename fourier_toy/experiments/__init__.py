"""The paper's experiments in toy form, and grids of runs.

  conditions.py    the embedding conditions (learned, Fourier, transplanted; frozen or trained)
                   and one run's train-then-diagnose
  paper.py         GPT-2's numbers from the paper (PAPER.md), as data
  reproduce.py     `fourier-toy reproduce`: conditions x seeds through a sweep, then the report
  report.py        report.md / summary.json / figures: each claim beside GPT-2's number
  sweep.py         grids of runs on local processes or a Dask cluster, resumable
  sweep_report.py  a sweep's statistics over seeds, table and figure
"""
