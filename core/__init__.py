"""Everything but the pages. Packages, grouped by what changes together:

    catalog      what can be asked of fal (prompts, endpoints, schemas, payloads, contenders)
    batches      plans, the runner (schedule / follow / record), the batches service, the fal client
    store        the Store (the only code that talks SQL) and image blobs (local or Supabase)
    photos       reference photos: upload checks, normalisation, the URL fal receives
    evaluation   fidelity metrics, blind review, statistics, the leaderboard
    export       CSV exports
    commands     `python -m core ...` (cli.py dispatches to them)

Top-level modules: config (settings), errors (the one exception tree), processes (detached
workers), redact (secrets out of any text). Never imports streamlit. Each package declares its
surface in `__all__` and loads names lazily, so `python -m core` starts fast.
"""
