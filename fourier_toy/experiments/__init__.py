"""The paper's experiments in toy form, and grids of runs.

  claims.py        the registry of the paper's claims: checks, thresholds, interval verdicts
  conditions.py    the embedding conditions (learned, Fourier, transplanted; frozen or trained)
                   and one run's train-then-diagnose
  executors.py     a sweep's runs in this process, a local process pool or on a Dask cluster
  grid.py          a sweep's grid: GRID.toml, its expansion into points, content-addressed run ids
  paper.py         GPT-2's numbers from the paper (PAPER.md), as data
  progress.py      progress: bars on a terminal, one line per run and per stage elsewhere
  records.py       a sweep's run records: finished runs and results.jsonl lines
  reproduce.py     `fourier-toy reproduce`: conditions x seeds through a sweep, then the report
  report.py        report.md / summary.json / figures: each claim beside GPT-2's number
  report_html.py   report.html: the same report as one self-contained page
  study.py         `fourier-toy study`: regime x condition x seed through a sweep, claims judged per regime
  study_report.py  study.md / study.json / figures of a study
  sweep.py         `run_sweep`: a grid's runs into one directory (its layout), resumable
  sweep_report.py  a sweep's statistics over seeds, table and figure
  workers.py       a sweep's worker processes: thread limits, start-up, watchdog, lock files
"""
