"""`trace-realign demo`: the experiment around the embedded scenario, as settings and a small driver.

- `demo.yaml`: the run sizes and the comparison protocol (data, not code);
- `settings.py`: reads them, and gives the `trace-realign run` configuration every method shares;
- `run.py`: `run_demo`, scenario -> `M_ref` -> pipeline -> report;
- `compare.py`: what `--compare` adds (rows, seeds, noisy judge, trade-off checkpoints, statistics);
- `audit.py`: the demo's judge audit; `cli.py`: the command.

    from trace_realign.demo.run import run_demo
    summary = run_demo("runs/demo", size="quick")
"""
