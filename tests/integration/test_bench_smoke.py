"""`xcon bench --quick` runs end to end and reports every workload (no timing is asserted)."""

from __future__ import annotations

import json

import pytest

from orchestrator.lab import bench_smtp

from ..conftest import xcon


@pytest.mark.long
def test_bench_quick_reports_every_workload(tmp_path):
    out = tmp_path / "bench.json"
    proc = xcon("bench", "--quick", "--out", str(out), "--json", run_dir=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    workloads = {r["workload"] for r in data["rows"]}
    for expected in ("cluster start", "same server (MTA -> store)", "across servers (MTA -> MTA -> store)",
                     "durable acceptance", "Move User, 100 messages", "Move User, 1000 messages",
                     "xcon check, 100000 lines", "memory", "chaos", "recovery"):
        assert expected in workloads, expected
    if bench_smtp.available():  # issue 21: smtp-source to an IMS beside Postfix -> Postfix -> Maildir
        assert "SMTP in (smtp-source)" in workloads
    figures = {r["figure"] for r in data["rows"]}
    for mode in ("random", "guided"):  # issue 31: the power to find bugs, random worlds beside guided
        assert f"distinct decisions in 130 trials, {mode}" in figures and f"trials to find livelock, {mode}" in figures
    durable = {r["figure"] for r in data["rows"] if r["workload"] == "durable acceptance"}
    assert {"accepted/s, 64 in flight", "accepted/s, one at a time"} <= durable, durable
    for r in data["rows"]:
        assert r["value"] > 0, r
        if r["baseline"] is not None:
            assert r["baseline"] > 0 and r["ratio"] > 0, r
