"""``sweeps ui`` serves the sweep's MLflow store: the study's runs are listed over the REST API.

Every test starts ``sweeps ui`` (and its ``mlflow server``) as a subprocess: the module is ``slow``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from servicekit import free_port, group_members, port_open, process_tree, wait_until

pytestmark = pytest.mark.slow

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
        # the printed link opens the runs table of that experiment (MLflow 3's hash route)
        assert f"  sweeps/tiny: {base}/#/experiments/{exp['experiment_id']}/runs" in \
            (tmp_path / "ui.log").read_text().splitlines()
        runs = get_json(f"{base}/api/2.0/mlflow/runs/search",
                        {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
        tags = {run["info"]["run_id"]: {t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs}
        parents = [rid for rid, t in tags.items() if t.get("sweeps.role") == "study"]
        children = {rid for rid, t in tags.items() if t.get("sweeps.role") == "trial"}
        assert len(runs) == 3
        assert parents == [study.user_attrs["sweeps.mlflow_parent_run_id"]]
        assert children == trial_run_ids
        assert all(tags[rid]["mlflow.parentRunId"] == parents[0] for rid in children)
    wait_until(lambda: not group_alive(proc.pid), 20, "the server's process group to go")


def _health_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.mark.skipif(not MLFLOW_EXE.exists(), reason=f"the `mlflow` executable is not next to {sys.executable}: "
                                                     "`sweeps ui` cannot start a server")
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_ui_signal_stops_the_whole_server_group(sw, signame: str, tmp_path: Path) -> None:
    """A signal to the `sweeps ui` process alone takes down the server it started, workers included: exit 130."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()  # ui opens an existing store
    port = free_port()
    log_path = tmp_path / "ui.log"
    with open(log_path, "wb") as log:
        ui = subprocess.Popen(sw.sweeps_cmd("ui", "--port", str(port)), cwd=tmp_path, env=sw.clean_env(),
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server_groups: set[int] = set()
    try:
        wait_until(lambda: ui.poll() is not None or _health_ok(port), 90, f"sweeps ui to answer on port {port}",
                   interval=0.25)
        assert ui.poll() is None, f"sweeps ui exited with {ui.returncode}:\n{log_path.read_text()[-3000:]}"
        server_pids = process_tree(ui.pid)  # mlflow server and its worker(s)
        assert len(server_pids) >= 2, server_pids
        server_groups = {os.getpgid(pid) for pid in server_pids}
        assert ui.pid not in server_groups, "the server should run in its own process group"

        os.kill(ui.pid, getattr(signal, signame))  # the `sweeps ui` process only, not its group

        def all_gone() -> bool:
            return (ui.poll() is not None and not port_open(port)
                    and not any(group_members(pgid) for pgid in server_groups | {ui.pid}))

        wait_until(all_gone, 30, f"sweeps ui, its server group {sorted(server_groups)} and port {port} to go")
        assert ui.returncode == 130, log_path.read_text()[-3000:]
    finally:
        for pgid in server_groups | {ui.pid}:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        ui.wait(timeout=10)
