"""The benchmark behind `python manage.py bench` (see docs/BENCHMARKS.md for what it measures).

    stats.py      nearest-rank percentiles (shared by the load client and the report)
    load.py       the load client, a separate process that must not import Django
    processes.py  starting/stopping the portal, reading CPU and memory from /proc
    sessions.py   bench users and logged-in session keys
    runner.py     drives one load point: spawns the client, samples /proc at its marks
    scenarios.py  the scenarios: what load, which figures
    dbcount.py    scenario 5: SQL statements per completion, measured in-process
    litellm.py    the optional side-by-side run against LiteLLM's proxy
    report.py     the console table and docs/BENCHMARKS.md

Nothing in this package's __init__ imports Django: `python -m gateway_portal.bench.load` runs in a
process of its own, so the client's CPU and event loop are not the portal's.
"""
