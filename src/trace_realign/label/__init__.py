"""Labels from the people who own the policy: a review page over a sample of the old pairs (or the
judges' disagreements) whose answers land, one line per pair, in the file `trace-realign audit`
reads; and the same sample as Label Studio tasks, with its export read back.

    sample.py       prepare_sample: draw (stratified, seeded) or reopen OUT/sample.json
    store.py        LabelStore: one reviewer's answers, rewritten atomically and durably per answer
    labelstudio.py  export_tasks (tasks.json + config.xml), import_export (JSON export -> labels)
    app.py          the Starlette app (Jinja2, autoescaped) and serve() with uvicorn
    stage.py        label(): the whole thing from Python; audit_commands
    cli.py          `trace-realign label`
"""
