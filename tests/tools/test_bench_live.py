"""`nightlink bench live`, run small: a real cloud process (a second one for the cross-process
figure), real WebSockets, uploads over HTTP; the last line is the figures as JSON."""

import json
import os
import subprocess
import sys

KEYS = ("p95_ms", "idle_cpu_pct", "rss_mb_per_1000", "one_tenant_p95_ms", "one_tenant_lost",
        "cross_process_p95_ms")


def test_bench_live__small_run_reports_every_figure():
    run = subprocess.run([sys.executable, "-m", "nightlink", "bench", "live", "--connections",
                          "200", "--tenants", "4", "--json"], capture_output=True, text=True,
                         timeout=300, env=os.environ)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "live" and figures["connections"] == 200
    assert figures["backend"] in ("postgres", "sqlite")
    for key in KEYS:
        assert isinstance(figures[key], int | float), (key, figures)
    # Every upload reached each of its tenant's clients: nothing lost at this size.
    assert figures["lost"] == 0 and figures["one_tenant_lost"] == 0
    assert figures["cross_process_lost"] == 0
