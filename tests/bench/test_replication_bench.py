"""bench/replication.py runs the three layouts end to end (tiny model, a few jobs): the cost of fsync and WAIT."""
from __future__ import annotations

import pytest

from inferq.bench import replication
from tests.figures import record


@pytest.mark.slow
def test_replication_bench_measures_both_layouts_side_by_side(tiny_model):
    rows = replication.compare(str(tiny_model), workers=2, jobs=120, clients=4, idle=20, precision="fp32")
    assert [r["layout"] for r in rows] == ["single-everysec", "single", "replicated"]
    everysec, single, replicated = rows
    for row in rows:
        assert row["errors"] == 0 and row["tps"] > 0 and row["idle_p50_ms"] > 0
    # The replicated layout's WAITs are commands on the primary: at least one more per job (the API's).
    assert replicated["redis_cmds_per_job"] > single["redis_cmds_per_job"]
    record("fsync always cost (tiny model)", everysec_idle_p50_ms=everysec["idle_p50_ms"],
           always_idle_p50_ms=single["idle_p50_ms"], everysec_tps=everysec["tps"], always_tps=single["tps"])
    record("replication cost (tiny model)", single_idle_p50_ms=single["idle_p50_ms"],
           replicated_idle_p50_ms=replicated["idle_p50_ms"], single_tps=single["tps"],
           replicated_tps=replicated["tps"], single_cmds_per_job=single["redis_cmds_per_job"],
           replicated_cmds_per_job=replicated["redis_cmds_per_job"])
    assert "| replicated |" in replication.table(rows)
