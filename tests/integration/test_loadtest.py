"""scripts/loadtest, run as a user would: a short run must finish with no error of any kind.

No timing is asserted (the machine is shared): only that every operation happened, nothing
failed, and the run cleaned up after itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis

LOADTEST = Path(__file__).resolve().parents[2] / "scripts" / "loadtest"


def test_short_load_run_has_no_errors_and_cleans_up(redis_url: str) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(LOADTEST),
            *("--minters", "2", "--verifiers", "2", "--duration", "3"),
            *("--json", "--redis", redis_url),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    summary = json.loads(out.stdout)
    assert summary["error_total"] == 0 and summary["errors"] == {}, summary["errors"]
    for op in ("mint", "check_cold", "check_warm"):
        row = summary["ops"][op]
        assert row["count"] > 0, (op, row)
        assert row["errors"] == {}, (op, row)
        assert row["p50_ms"] is not None and row["p999_ms"] is not None
    # Cold checks are of tokens the minters made during the run, each checked once.
    assert summary["ops"]["check_cold"]["count"] <= summary["ops"]["mint"]["count"]
    assert summary["redis_keys_deleted"] > 0
    client = redis.Redis.from_url(redis_url)
    try:
        prefix = summary["redis_prefix"]
        assert prefix.startswith("remit-load-")
        assert not list(client.scan_iter(match=f"{prefix}*", count=1000))
    finally:
        client.close()
