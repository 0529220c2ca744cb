"""Many workers on one PostgreSQL and one tracking server, as separate machines would run them.

    python benchmarks/bench_scale.py [--fleets 4x2 4x4 8x4 8x8] [--trials 400] [--epochs 5]

Each fleet ``LxW`` is L launchers of ``sweeps run --workers W`` (L x W workers) sharing one study of
``--trials`` short trials (digits, ``--epochs`` epochs, random sampler, no pruner) on PostgreSQL at
127.0.0.1:5432 (two fresh databases, dropped afterwards: the study and MLflow's store) and one
``mlflow server`` on loopback (``--server-workers`` processes, each with MLflow's SQL pool set to
``--server-pool`` + ``--server-overflow`` connections), after one ``sweeps prepare``. Reported per fleet:

* trials per minute (from the first launcher's start to the last one's end);
* peak connections to each database (``pg_stat_activity``, sampled every ``--sample-s`` s), and to the study
  database by role (``application_name``: ``sweeps worker ...`` / ``sweeps launcher ...``);
* CPU seconds of the tracking server (its process group) and of PostgreSQL (the postmaster's reaped
  backends plus the live ones), per trial and per logged epoch;
* memory: the fleet's peak resident total and the largest process (launcher, worker, server);
* errors (``too many clients``, tracebacks) in every log, every launcher's exit code, and the sweep-end
  invariant (exactly n_trials counted trials, none RUNNING or WAITING; one finished run per trial
  attempt; every epoch of every completed trial in MLflow).

Everything it starts runs in its own process group and is stopped by it; loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the repository first: tests/sweeps is no package

from servicekit import MlflowServer, database_name, pg_admin_query, pg_database  # noqa: E402

BIN = Path(sys.executable).parent
ERRORS = ("too many clients", "remaining connection slots", "Traceback (most recent call last)")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def sweep_config(n_trials: int, epochs: int) -> dict[str, Any]:
    return {
        "name": "scale", "seed": 0,
        "data": {"source": "digits", "n_train": 300, "n_eval": 100},
        "network": {"hidden": [10]},
        "training": {"epochs": epochs, "eta": 0.5, "batch_size": 10, "lmbda": 1.0},
        "search_space": {"eta": {"type": "float", "low": 0.1, "high": 2.0, "log": True},
                         "lmbda": {"type": "float", "low": 0.01, "high": 5.0, "log": True}},
        "study": {"n_trials": n_trials, "sampler": {"name": "random"}, "pruner": {"name": "none"}},
    }


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from the state on (field 3)


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _group(pgid: int) -> list[int]:
    out = []
    for pid in _all_pids():
        fields = _stat(pid)
        if fields is not None and int(fields[2]) == pgid:
            out.append(pid)
    return out


def _cpu_s(pids: list[int], children: bool = False) -> float:
    """utime + stime of ``pids`` (and, with ``children``, of their reaped children), in seconds."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
            if children:
                total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / CLK_TCK


def postgres_cpu_s() -> float:
    """PostgreSQL's CPU so far: the postmaster with its reaped backends, plus the live backends."""
    pids = [pid for pid in _all_pids() if (Path(f"/proc/{pid}/comm").exists()
                                           and Path(f"/proc/{pid}/comm").read_text().strip() == "postgres")]
    postmasters = [pid for pid in pids if (_stat(pid) or ["", "0"])[1] == "1"]
    return _cpu_s(postmasters, children=True) + _cpu_s([p for p in pids if p not in postmasters])


@dataclass(eq=False)
class Sampler(threading.Thread):
    """Peaks of connections (per database, per role) and of memory, every ``interval`` seconds."""

    databases: list[str]
    groups: dict[str, list[int]]  # kind -> process-group ids (launchers, server)
    interval: float = 0.5
    peaks: dict[str, int] = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)
        self._halt = threading.Event()

    def _peak(self, key: str, value: int) -> None:
        self.peaks[key] = max(self.peaks.get(key, 0), value)

    def sample(self) -> None:
        rows = pg_admin_query("SELECT datname, coalesce(application_name, '') FROM pg_stat_activity "
                              "WHERE datname = ANY(%s)", (self.databases,))
        for label, db in zip(("study", "mlflow"), self.databases):
            self._peak(label, sum(1 for name, _ in rows if name == db))
        study = [app for name, app in rows if name == self.databases[0]]
        for role in ("worker", "launcher"):
            self._peak(f"study:{role}", sum(1 for app in study if app.startswith(f"sweeps {role}")))
        total = 0
        for kind, pgids in self.groups.items():
            for pgid in pgids:
                for pid in _group(pgid):
                    rss = _rss_bytes(pid)
                    total += rss
                    self.memory[kind] = max(self.memory.get(kind, 0), rss)
        self.memory["total"] = max(self.memory.get("total", 0), total)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.sample()
            except Exception as err:  # noqa: BLE001 - a sample that fails (the server is full) is reported
                self.errors.append(f"sampler: {type(err).__name__}: {str(err).splitlines()[0]}")

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


@dataclass
class FleetResult:
    launchers: int
    workers_each: int
    n_trials: int
    epochs: int
    wall_s: float
    exit_codes: list[int]
    peaks: dict[str, int]
    memory_mib: dict[str, float]
    server_cpu_s: float
    postgres_cpu_s: float
    errors: list[str]
    invariant: list[str]  # what did not hold (empty: all held)
    logged_epochs: int

    @property
    def workers(self) -> int:
        return self.launchers * self.workers_each

    def row(self) -> str:
        per_trial = 1000 / self.n_trials
        per_epoch = 1000 / max(self.logged_epochs, 1)
        return (f"| {self.launchers} x {self.workers_each} = {self.workers} | {60 * self.n_trials / self.wall_s:.0f} | "
                f"{self.peaks.get('study', 0)} ({self.peaks.get('study:worker', 0)} worker, "
                f"{self.peaks.get('study:launcher', 0)} launcher) | {self.peaks.get('mlflow', 0)} | "
                f"{self.server_cpu_s * per_trial:.0f} / {self.server_cpu_s * per_epoch:.1f} | "
                f"{self.postgres_cpu_s * per_trial:.0f} / {self.postgres_cpu_s * per_epoch:.1f} | "
                f"{self.memory_mib.get('total', 0):.0f} (launcher {self.memory_mib.get('launcher', 0):.0f}, server "
                f"{self.memory_mib.get('server', 0):.0f}) | {len(self.errors)} | "
                f"{','.join(map(str, sorted(set(self.exit_codes))))} | {'held' if not self.invariant else 'BROKEN'} |")


HEADER = ("| launchers x workers | trials/min | peak connections, study DB | peak, MLflow DB | tracking server CPU ms "
          "per trial / per epoch | PostgreSQL CPU ms per trial / per epoch | peak memory MiB (largest launcher, "
          "server) | errors | exit codes | invariant |\n|---|---|---|---|---|---|---|---|---|---|")


def check_invariant(study_url: str, tracking_uri: str, n_trials: int, epochs: int) -> tuple[list[str], int]:
    """What does not hold of the sweep-end invariant, and the epochs logged to MLflow."""
    import mlflow
    import optuna

    from sweeps.study.budget import retried_numbers

    broken: list[str] = []
    trials = optuna.load_study(study_name="scale", storage=study_url).get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    counted = [t for t in trials if t.number not in retried]
    if len(counted) != n_trials:
        broken.append(f"{len(counted)} counted trials, not {n_trials}")
    left = [t.number for t in trials if t.state.name in ("RUNNING", "WAITING")]
    if left:
        broken.append(f"trials left RUNNING/WAITING: {left}")
    if len({tuple(sorted(t.params.items())) for t in counted}) != len(counted):
        broken.append("two counted trials share their parameters")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name("sweeps/scale")
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=50_000)
            if r.data.tags.get("sweeps.role") == "trial"]
    if len(runs) != len(trials):
        broken.append(f"{len(runs)} trial runs for {len(trials)} trials")
    if any(r.info.status == "RUNNING" for r in runs):
        broken.append("a run is still RUNNING")
    by_id = {r.info.run_id: r for r in runs}
    logged = 0
    for t in trials:
        if t.state.name == "COMPLETE":
            run_id = t.user_attrs.get("mlflow_run_id")
            steps = {m.step for m in client.get_metric_history(run_id, "eval/accuracy")} if run_id in by_id else set()
            logged += len(steps)
            if steps != set(range(epochs + 1)):
                broken.append(f"trial {t.number}: epochs {sorted(steps)} in MLflow")
    return broken, logged


def run_fleet(launchers: int, workers_each: int, *, n_trials: int = 400, epochs: int = 5, server_workers: int = 2,
              server_pool: int = 5, server_overflow: int = 5, sample_s: float = 0.5,
              workdir: Path | None = None, timeout_s: float = 1800) -> FleetResult:
    """One fleet on fresh databases and a fresh tracking server; everything started is stopped here."""
    import yaml

    with tempfile.TemporaryDirectory(prefix="sweeps-scale-") as tmp, pg_database("sweeps_scale_optuna") as study_url, \
            pg_database("sweeps_scale_mlflow") as mlflow_url:
        base = Path(workdir or tmp)
        config = base / "sweep.yaml"
        config.write_text(yaml.safe_dump(sweep_config(n_trials, epochs)))
        with MlflowServer(mlflow_url, base / "artifacts", base / "mlflow.log", workers=server_workers,
                          env={"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(server_pool),
                               "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(server_overflow)}) as server:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SWEEPS_"))}
            env.update(SWEEPS_STORAGE=study_url, MLFLOW_TRACKING_URI=server.url, PYTHONUNBUFFERED="1")
            prep = subprocess.run([str(BIN / "sweeps"), "prepare", str(config)], env=env, cwd=base,
                                  capture_output=True, text=True, timeout=600)
            if prep.returncode != 0:
                raise RuntimeError(f"sweeps prepare failed: {prep.stderr[-2000:]}")
            sampler = Sampler([database_name(study_url), database_name(mlflow_url)],
                              {"launcher": [], "server": [server.pid]}, interval=sample_s)
            procs: list[subprocess.Popen] = []
            logs: list[Path] = []
            server_cpu0, pg_cpu0 = _cpu_s(_group(server.pid)), postgres_cpu_s()
            sampler.start()
            start = time.monotonic()
            try:
                for i in range(launchers):
                    cwd = base / f"machine{i}"
                    cwd.mkdir()
                    logs.append(cwd / "launcher.log")
                    with open(logs[-1], "w") as log:
                        procs.append(subprocess.Popen([str(BIN / "sweeps"), "run", str(config), "--workers",
                                                       str(workers_each), "--quiet"], env=env, cwd=cwd, stdout=log,
                                                      stderr=subprocess.STDOUT, start_new_session=True))
                    sampler.groups["launcher"].append(procs[-1].pid)
                codes = [p.wait(timeout=timeout_s) for p in procs]
                wall = time.monotonic() - start
                server_cpu = _cpu_s(_group(server.pid)) - server_cpu0
                pg_cpu = postgres_cpu_s() - pg_cpu0
            finally:
                sampler.stop()
                for p in procs:
                    if p.poll() is None:
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait(timeout=30)
            broken, logged = check_invariant(study_url, server.url, n_trials, epochs)
        errors = list(sampler.errors)
        for path in [*logs, base / "mlflow.log"]:
            text = path.read_text(errors="replace") if path.exists() else ""
            errors += [f"{path.parent.name}/{path.name}: {e}" for e in ERRORS for _ in range(text.count(e))]
        return FleetResult(launchers, workers_each, n_trials, epochs, wall, codes, dict(sampler.peaks),
                           {k: v / 2**20 for k, v in sampler.memory.items()}, server_cpu, pg_cpu, errors, broken,
                           logged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fleets", nargs="+", default=["4x2", "4x4", "8x4", "8x8"],
                        help="LxW: L launchers of --workers W each")
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--server-workers", type=int, default=2)
    parser.add_argument("--server-pool", type=int, default=5)
    parser.add_argument("--server-overflow", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    max_conn = pg_admin_query("SHOW max_connections")[0][0]
    print(f"PostgreSQL max_connections = {max_conn}; one mlflow server, {args.server_workers} processes, pool "
          f"{args.server_pool} + {args.server_overflow} each; {args.trials} trials x {args.epochs} epochs; "
          f"{os.cpu_count()} cores")
    print(HEADER, flush=True)
    results = []
    for fleet in args.fleets:
        launchers, workers = (int(x) for x in fleet.lower().split("x"))
        result = run_fleet(launchers, workers, n_trials=args.trials, epochs=args.epochs,
                           server_workers=args.server_workers, server_pool=args.server_pool,
                           server_overflow=args.server_overflow)
        results.append(result)
        print(result.row(), flush=True)
        for line in (result.errors[:5] + result.invariant[:5]):
            print(f"    {line}")
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))


if __name__ == "__main__":
    main()
