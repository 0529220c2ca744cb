"""``sweeps ui`` serves the sweep's MLflow store: the study's runs are listed over the REST API."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

MLFLOW_EXE = Path(sys.executable).with_name("mlflow")


def get_json(url: str, data: dict | None = None) -> dict:
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"},
                                 method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(not MLFLOW_EXE.exists(), reason=f"the `mlflow` executable is not next to {sys.executable}: "
                                                     "`sweeps ui` cannot start a server")
def test_ui_serves_the_study_runs(sw, services, tmp_path: Path) -> None:
    sw.write_config(tmp_path)
    r = sw.run_cli(["run", "cfg.yaml", "--n-trials", "2", "-q", "--no-artifacts"], tmp_path)
    assert r.returncode in (0, 1), sw.describe(r)
    study = sw.load_study(tmp_path)
    trial_run_ids = {t.user_attrs["mlflow_run_id"] for t in study.trials}
    assert len(trial_run_ids) == 2

    port = services.free_port()
    with services.serve(sw.sweeps_cmd("ui", "--port", str(port)), port, tmp_path / "ui.log", cwd=tmp_path,
                        env=sw.clean_env(), timeout=90) as (base, proc):
        exp = get_json(f"{base}/api/2.0/mlflow/experiments/get-by-name?"
                       + urllib.parse.urlencode({"experiment_name": "sweeps/tiny"}))["experiment"]
        assert exp["name"] == "sweeps/tiny"
        runs = get_json(f"{base}/api/2.0/mlflow/runs/search",
                        {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
        tags = {run["info"]["run_id"]: {t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs}
        parents = [rid for rid, t in tags.items() if t.get("sweeps.role") == "study"]
        children = {rid for rid, t in tags.items() if t.get("sweeps.role") == "trial"}
        assert len(runs) == 3
        assert parents == [study.user_attrs["sweeps.mlflow_parent_run_id"]]
        assert children == trial_run_ids
        assert all(tags[rid]["mlflow.parentRunId"] == parents[0] for rid in children)
    deadline = time.monotonic() + 20
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not group_alive(proc.pid), "the server's process group survived"
