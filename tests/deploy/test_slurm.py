"""``deploy/slurm``: the job-array script, the prepare job and ``submit.sh``, without SLURM.

SLURM cannot be installed here, so what SLURM itself does is stood in for: its ``#SBATCH`` lines are
checked against sbatch's option syntax; the batch scripts run under plain bash (their ``#SBATCH`` lines
are comments) with the variables SLURM would set (``SLURM_ARRAY_TASK_ID``, ``SLURM_CPUS_PER_TASK``) and
SQLite stores; ``--signal=B:TERM`` is a SIGTERM to the bash process only, a preemption a SIGTERM to every
process of the job; ``sbatch``/``scancel`` are fakes on PATH that record their arguments. Passwords (the
database's, the MLflow user's ``MLFLOW_TRACKING_PASSWORD``) reach the jobs only from an env file readable by
its owner only, never from the submitting environment, and no log shows them.

Tests that start processes are ``slow``. Every process group started here is killed when the test ends.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SLURM_DIR = REPO_ROOT / "deploy" / "slurm"
SWEEP = SLURM_DIR / "sweep.sbatch"
PREPARE = SLURM_DIR / "prepare.sbatch"
SUBMIT = SLURM_DIR / "submit.sh"
SCRIPTS = (SWEEP, PREPARE, SUBMIT)
VENV_BIN = Path(sys.executable).parent


def _load_sweeps_helpers() -> Any:
    """tests/sweeps/conftest.py (write_config, clean_env, wait_for, ...), loaded under its own name: it is not
    a conftest of this folder, and ``import conftest`` would pick whichever conftest comes first on sys.path."""
    path = REPO_ROOT / "tests" / "sweeps" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_sweeps_test_helpers", path)
    module = importlib.util.module_from_spec(spec)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(module)
    return module


sw = _load_sweeps_helpers()

# -- #SBATCH directives --------------------------------------------------------------------------

_NUM = r"[1-9][0-9]*"
_RANGE = r"[0-9]+(?:-[0-9]+(?::[1-9][0-9]*)?)?"
_SIZE = r"[1-9][0-9]*[KMGT]?"
_TIME = (r"(?:[0-9]+-[0-9]{1,2}(?::[0-9]{2}){0,2}"  # days-hours[:minutes[:seconds]]
         r"|[0-9]+(?::[0-9]{2}){0,2})")            # minutes | minutes:seconds | hours:minutes:seconds
_NAME = r"[A-Za-z0-9_.+-]+"
_FILENAME = r"(?:[^\s%]|%%|%[0-9]?[AajJNnstuxb])+"   # sbatch's filename patterns (man sbatch)
_SIGNAL = r"(?:[RB]:)?(?:(?:SIG)?[A-Z][A-Z0-9]*|[1-9][0-9]?)(?:@[0-9]+)?"

#: sbatch options these scripts may use: name -> the shape of its value (None: a flag, no value).
SBATCH_OPTIONS: dict[str, str | None] = {
    "job-name": _NAME,
    "array": rf"{_RANGE}(?:,{_RANGE})*(?:%{_NUM})?",
    "ntasks": _NUM,
    "nodes": rf"{_NUM}(?:-{_NUM})?",
    "cpus-per-task": _NUM,
    "mem": _SIZE,
    "mem-per-cpu": _SIZE,
    "time": _TIME,
    "signal": _SIGNAL,
    "requeue": None,
    "no-requeue": None,
    "open-mode": r"append|truncate",
    "output": _FILENAME,
    "error": _FILENAME,
    "partition": rf"{_NAME}(?:,{_NAME})*",
    "account": _NAME,
    "qos": _NAME,
    "kill-on-invalid-dep": r"yes|no",
}


def directives(path: Path) -> list[tuple[str, str | None]]:
    """The ``#SBATCH`` options of a batch script, in order, as sbatch reads them: it stops at the first line
    that is neither blank nor a comment; an ``#SBATCH`` line after that is an error here (sbatch ignores it)."""
    out: list[tuple[str, str | None]] = []
    in_header = True
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if number == 1 and stripped.startswith("#!"):
            continue
        if in_header and stripped and not stripped.startswith("#"):
            in_header = False
        if not line.startswith("#SBATCH"):
            assert not re.match(r"#\s*SBATCH", stripped), \
                f"{path.name}:{number}: not an #SBATCH line as sbatch reads it: {line!r}"
            continue
        assert in_header, f"{path.name}:{number}: #SBATCH after the first command is ignored by sbatch: {line!r}"
        m = re.fullmatch(r"#SBATCH --([a-z][a-z-]*)(?:=(\S+))?(\s+#.*)?", line)
        assert m, f"{path.name}:{number}: not '#SBATCH --option[=value]': {line!r}"
        out.append((m.group(1), m.group(2)))
    return out


def _seconds(slurm_time: str) -> int:
    days, _, rest = slurm_time.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        parts += [0] * (3 - len(parts))
        return int(days) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:  # minutes:seconds
        return parts[0] * 60 + parts[1]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def options_of(path: Path) -> dict[str, str | None]:
    opts = directives(path)
    names = [name for name, _ in opts]
    assert len(names) == len(set(names)), f"{path.name}: an option given twice: {names}"
    return dict(opts)


@pytest.mark.parametrize("script", [SWEEP, PREPARE], ids=lambda p: p.name)
def test_every_sbatch_directive_is_a_known_option_with_a_value_of_its_shape(script: Path) -> None:
    opts = options_of(script)
    assert opts, f"{script.name} has no #SBATCH line"
    for name, value in opts.items():
        assert name in SBATCH_OPTIONS, f"{script.name}: --{name} is not one of the known sbatch options"
        shape = SBATCH_OPTIONS[name]
        if shape is None:
            assert value is None, f"{script.name}: --{name} is a flag, it takes no value (got {value!r})"
        else:
            assert value is not None and re.fullmatch(shape, value), \
                f"{script.name}: --{name}={value} does not have the shape {shape}"


def test_directive_checker_rejects_what_sbatch_would_not_take(tmp_path: Path) -> None:
    """The checks above can fail: a late #SBATCH line, an unknown option, a bad value, a value on a flag."""
    def check(text: str) -> None:
        path = tmp_path / "job.sbatch"
        path.write_text("#!/bin/bash\n" + text)
        for name, value in options_of(path).items():
            shape = SBATCH_OPTIONS[name]
            assert (value is None) if shape is None else bool(value and re.fullmatch(shape, value)), (name, value)

    check("#SBATCH --array=0-7%2\n#SBATCH --time=1-12:00\n#SBATCH --signal=B:TERM@120\n#SBATCH --requeue\n")
    for bad in ("set -e\n#SBATCH --time=10\n", "#SBATCH --arrays=0-7\n", "#SBATCH --time=4h\n",
                "#SBATCH --signal=B:TERM@\n", "#SBATCH --requeue=yes\n", "#SBATCH --cpus-per-task 4\n",
                "#SBATCH --output=slurm-%q.out\n", "# SBATCH --time=10\n"):
        try:
            check(bad)
        except (AssertionError, KeyError):
            continue
        pytest.fail(f"the checker accepted {bad!r}")


def test_sweep_array_directives_give_the_documented_deployment() -> None:
    from sweeps.engine.runner import INTERRUPT_KILL_AFTER

    opts = options_of(SWEEP)
    assert opts["array"] == "0-7"
    assert opts["cpus-per-task"] == "4"
    assert "mem-per-cpu" in opts
    assert "requeue" in opts and opts["open-mode"] == "append"
    assert opts["output"] == "slurm-%A_%a.out"
    m = re.fullmatch(r"B:(?:SIG)?([A-Z]+)@([0-9]+)", opts["signal"])
    assert m, f"--signal={opts['signal']}: the batch shell (B:) must get the signal, with a time"
    sig, lead = m.group(1), int(m.group(2))
    assert sig == "TERM"
    # the launcher waits INTERRUPT_KILL_AFTER s for its workers before it kills them: that must fit in the lead
    assert lead >= INTERRUPT_KILL_AFTER + 30, (lead, INTERRUPT_KILL_AFTER)
    assert _seconds(opts["time"]) > 10 * lead, opts["time"]
    # the signal --signal sends is the one the script traps and forwards
    traps = re.findall(r"^trap\s+\S+\s+(.+)$", SWEEP.read_text(), re.MULTILINE)
    assert traps and sig in traps[0].split(), traps
    assert "--workers \"$workers\"" in SWEEP.read_text() and 'workers="${SLURM_CPUS_PER_TASK:-1}"' in SWEEP.read_text()


def test_prepare_is_one_task_and_not_an_array() -> None:
    opts = options_of(PREPARE)
    assert "array" not in opts
    assert opts.get("ntasks", "1") == "1"
    assert "sweeps" in PREPARE.read_text() and " prepare \"$SWEEP_CONFIG\"" in PREPARE.read_text()


def test_no_credentials_in_the_scripts() -> None:
    """Passwords belong in SWEEPS_ENV_FILE or ~/.pgpass: a URL with user:password@ in a script is a leak."""
    for script in SCRIPTS:
        text = script.read_text()
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), f"{script.name} holds a URL with a password"
        assert not re.search(r"^\s*(export\s+)?(SWEEPS_STORAGE|MLFLOW_TRACKING_URI)=", text, re.MULTILINE), \
            f"{script.name} sets a store location itself: it must come from the environment"


# -- running the scripts under bash -----------------------------------------------------------------

def _proc_stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat and stat[0] != "Z" and int(stat[2]) == pgid:
                out.append(int(entry))
    return out


class Jobs:
    """Batch scripts started as SLURM would run them (a process group each); all killed at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, script: Path, cwd: Path, env: dict[str, str], log: str) -> subprocess.Popen:
        with open(cwd / log, "wb") as out:  # SLURM's --output: stdout and stderr together
            proc = subprocess.Popen(["bash", str(script)], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def run(self, script: Path, cwd: Path, env: dict[str, str], log: str, timeout: float = 240) -> int:
        proc = self.start(script, cwd, env, log)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{script.name} still running after {timeout} s:\n{(cwd / log).read_text()[-3000:]}")

    def stop_all(self) -> None:
        for proc in self.procs:
            for _ in range(3):
                if not group_members(proc.pid):
                    break
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            if proc.poll() is None:
                proc.wait(timeout=10)


@pytest.fixture
def jobs() -> Iterator[Jobs]:
    j = Jobs()
    try:
        yield j
    finally:
        j.stop_all()


def job_env(directory: Path, **extra: str) -> dict[str, str]:
    """What a job of this deployment sees: SQLite stores in ``directory``, this venv's ``sweeps`` on PATH."""
    assert (VENV_BIN / "sweeps").exists(), f"no sweeps command next to {sys.executable}"
    env = sw.clean_env(SWEEP_CONFIG="cfg.yaml", SWEEPS_STORAGE=f"sqlite:///{directory / 'optuna.db'}",
                       MLFLOW_TRACKING_URI=f"sqlite:///{directory / 'mlflow.db'}", SLURM_CPUS_PER_TASK="2",
                       SLURM_ARRAY_JOB_ID="4242", SLURM_ARRAY_TASK_ID="0")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def _log(directory: Path, name: str) -> str:
    path = directory / name
    return path.read_text(errors="replace")[-6000:] if path.exists() else f"({name} missing)"


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_under_bash_n(script: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(script)], check=False, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr


@pytest.mark.slow
def test_bash_n_catches_a_broken_script(tmp_path: Path) -> None:
    broken = tmp_path / "broken.sbatch"
    broken.write_text(SWEEP.read_text().replace("esac", "", 1))
    assert subprocess.run(["bash", "-n", str(broken)], check=False, capture_output=True, timeout=30).returncode != 0


@pytest.mark.slow
def test_prepare_then_two_array_tasks_run_the_whole_study(jobs: Jobs, tmp_path: Path) -> None:
    n_trials = 6
    sw.write_config(tmp_path, {"study": {"n_trials": n_trials}})
    rc = jobs.run(PREPARE, tmp_path, job_env(tmp_path), "slurm-prepare-4241.out")
    assert rc == 0, _log(tmp_path, "slurm-prepare-4241.out")
    # prepare made the study and its budget, and the parent run, and ran nothing
    study = sw.load_study(tmp_path)
    assert [t.state.name for t in study.trials] == ["WAITING"] * n_trials
    parents, children = sw.split_runs(sw.experiment_runs(tmp_path, "sweeps/tiny"))
    assert len(parents) == 1 and not children

    # two array tasks at once, as two machines would be (2 CPUs each: 4 workers on one SQLite study)
    procs = {task: jobs.start(SWEEP, tmp_path, job_env(tmp_path, SLURM_ARRAY_TASK_ID=str(task)),
                              f"slurm-4242_{task}.out") for task in (0, 1)}
    for task, proc in procs.items():
        try:
            rc = proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            pytest.fail(f"task {task} still running:\n{_log(tmp_path, f'slurm-4242_{task}.out')}")
        log = _log(tmp_path, f"slurm-4242_{task}.out")
        assert rc == 0, log
        assert f"task 4242_{task} on " in log and "--workers 2" in log, log
        assert "sweeps run exited 0 (done)" in log, log
        assert "sqlite:///" not in log, "the script printed a store URL (it may hold a password)"

    study = sw.load_study(tmp_path)
    assert len(study.trials) == n_trials
    states = {t.number: t.state.name for t in study.trials}
    assert set(states.values()) <= {"COMPLETE", "PRUNED"} and "COMPLETE" in states.values(), states
    parents, children = sw.split_runs(sw.experiment_runs(tmp_path, "sweeps/tiny"))
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [p.info.status for p in parents]
    by_trial: dict[int, Any] = {}
    for run in children:
        number = int(run.data.tags["sweeps.trial_number"])
        assert number not in by_trial, f"two MLflow runs for trial {number}"
        by_trial[number] = run
    assert sorted(by_trial) == sorted(states)
    for t in study.trials:
        run = by_trial[t.number]
        assert run.info.run_id == t.user_attrs["mlflow_run_id"]
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[t.state.name]


@pytest.mark.slow
@pytest.mark.parametrize("script", [SWEEP, PREPARE], ids=lambda p: p.name)
@pytest.mark.parametrize("missing", ["SWEEPS_STORAGE", "MLFLOW_TRACKING_URI", "SWEEP_CONFIG"])
def test_a_missing_variable_fails_at_once_with_one_line_naming_it(jobs: Jobs, tmp_path: Path, script: Path,
                                                                  missing: str) -> None:
    sw.write_config(tmp_path)
    started = time.monotonic()
    rc = jobs.run(script, tmp_path, job_env(tmp_path, **{missing: None}), "job.out", timeout=30)
    elapsed = time.monotonic() - started
    out = (tmp_path / "job.out").read_text()
    assert rc != 0
    lines = out.strip().splitlines()
    assert len(lines) == 1 and f"{missing}: is not set" in lines[0], out
    assert elapsed < 5, f"took {elapsed:.1f} s: sweeps was started?"
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


FAKE_SWEEPS = """#!/bin/bash
{ printf '%s\\n' "$@"; echo "--env"; env | grep -E '^(OMP_NUM_THREADS|OPENBLAS_NUM_THREADS|MKL_NUM_THREADS|\
SWEEPS_STORAGE|MLFLOW_TRACKING_URI|MLFLOW_TRACKING_USERNAME|MLFLOW_TRACKING_PASSWORD|SECRET_FROM_FILE)=' | sort; \
} > "$FAKE_RECORD"
exit "${FAKE_EXIT:-0}"
"""


#: An MLflow password in the tests' env files (random: it must never show up in a log).
MLFLOW_SECRET = os.urandom(12).hex()


def _fake_sweeps(tmp_path: Path) -> Path:
    fake = tmp_path / "fake-sweeps"
    fake.write_text(FAKE_SWEEPS)
    fake.chmod(0o755)
    return fake


def _recorded(record: Path) -> tuple[list[str], dict[str, str]]:
    """(arguments, environment) the fake sweeps was started with."""
    args, _, env_lines = record.read_text().partition("--env\n")
    return args.split(), dict(line.split("=", 1) for line in env_lines.splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("code", [0, 1, 3, 4, 130])
def test_the_script_passes_the_env_file_on_and_exits_with_sweeps_own_code(jobs: Jobs, tmp_path: Path,
                                                                          code: int) -> None:
    fake = _fake_sweeps(tmp_path)
    env_file = tmp_path / "sweeps.env"
    env_file.write_text("SWEEPS_STORAGE=postgresql+psycopg2://sweeps:pw@db/optuna\n"
                        "MLFLOW_TRACKING_URI=http://track:5000\nSECRET_FROM_FILE=yes\n"
                        f"MLFLOW_TRACKING_USERNAME=sweeps-worker\nMLFLOW_TRACKING_PASSWORD={MLFLOW_SECRET}\n")
    env_file.chmod(0o600)
    record = tmp_path / "record"
    env = job_env(tmp_path, SWEEPS_STORAGE=None, MLFLOW_TRACKING_URI=None, SWEEPS_ENV_FILE=str(env_file),
                  SWEEPS_BIN=str(fake), FAKE_RECORD=str(record), FAKE_EXIT=str(code), SLURM_CPUS_PER_TASK="3")
    rc = jobs.run(SWEEP, tmp_path, env, "job.out", timeout=30)
    out = (tmp_path / "job.out").read_text()
    assert rc == code, out
    args, got = _recorded(record)
    assert args == ["run", "cfg.yaml", "--workers", "3", "--quiet"]
    assert got == {"MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                   "SWEEPS_STORAGE": "postgresql+psycopg2://sweeps:pw@db/optuna",
                   "MLFLOW_TRACKING_URI": "http://track:5000", "SECRET_FROM_FILE": "yes",
                   "MLFLOW_TRACKING_USERNAME": "sweeps-worker", "MLFLOW_TRACKING_PASSWORD": MLFLOW_SECRET}
    assert f"sweeps run exited {code} (" in out and "pw@" not in out and MLFLOW_SECRET not in out, out



@pytest.mark.slow
def test_prepare_logs_in_with_the_env_file_user_too(jobs: Jobs, tmp_path: Path) -> None:
    """prepare creates the experiment: it must log in as the same user as the array (then the experiment is theirs)."""
    env_file = tmp_path / "sweeps.env"
    env_file.write_text("SWEEPS_STORAGE=sqlite:///optuna.db\nMLFLOW_TRACKING_URI=http://track:5000\n"
                        f"MLFLOW_TRACKING_USERNAME=sweeps-worker\nMLFLOW_TRACKING_PASSWORD={MLFLOW_SECRET}\n")
    env_file.chmod(0o600)
    record = tmp_path / "record"
    env = job_env(tmp_path, SWEEPS_STORAGE=None, MLFLOW_TRACKING_URI=None, SWEEPS_ENV_FILE=str(env_file),
                  SWEEPS_BIN=str(_fake_sweeps(tmp_path)), FAKE_RECORD=str(record))
    assert jobs.run(PREPARE, tmp_path, env, "prepare.out", timeout=30) == 0, _log(tmp_path, "prepare.out")
    args, got = _recorded(record)
    assert args == ["prepare", "cfg.yaml"]
    assert got["MLFLOW_TRACKING_USERNAME"] == "sweeps-worker" and got["MLFLOW_TRACKING_PASSWORD"] == MLFLOW_SECRET
    assert MLFLOW_SECRET not in (tmp_path / "prepare.out").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("script", [SWEEP, PREPARE], ids=lambda p: p.name)
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o700 | 0o020])
def test_an_env_file_others_may_read_is_refused_with_one_line(jobs: Jobs, tmp_path: Path, script: Path,
                                                              mode: int) -> None:
    env_file = tmp_path / "sweeps.env"
    env_file.write_text(f"MLFLOW_TRACKING_PASSWORD={MLFLOW_SECRET}\n")
    env_file.chmod(mode)
    record = tmp_path / "record"
    env = job_env(tmp_path, SWEEPS_ENV_FILE=str(env_file), SWEEPS_BIN=str(_fake_sweeps(tmp_path)),
                  FAKE_RECORD=str(record))
    rc = jobs.run(script, tmp_path, env, "job.out", timeout=30)
    out = (tmp_path / "job.out").read_text().strip()
    assert rc == 2, out
    assert len(out.splitlines()) == 1 and "SWEEPS_ENV_FILE" in out and "chmod 600" in out, out
    assert not record.exists(), "sweeps was started"
    env_file.chmod(0o400)  # read-only for its owner: fine
    assert jobs.run(script, tmp_path, env, "job.out", timeout=30) == 0, _log(tmp_path, "job.out")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_an_env_file_of_another_user_is_refused(jobs: Jobs, tmp_path: Path) -> None:
    env_file = tmp_path / "sweeps.env"
    env_file.write_text("SECRET_FROM_FILE=yes\n")
    env_file.chmod(0o600)
    os.chown(env_file, 65534, 65534)  # nobody: root can still read it, but it is not the job's own file
    env = job_env(tmp_path, SWEEPS_ENV_FILE=str(env_file), SWEEPS_BIN=str(_fake_sweeps(tmp_path)),
                  FAKE_RECORD=str(tmp_path / "record"))
    assert jobs.run(SWEEP, tmp_path, env, "job.out", timeout=30) == 2
    assert "must be yours" in (tmp_path / "job.out").read_text()


def _readme_block(marker: str) -> str:
    """The fenced bash block of deploy/slurm/README.md that holds ``marker``."""
    text = (SLURM_DIR / "README.md").read_text()
    (block,) = [b for b in re.findall(r"^```bash\n(.*?)^```", text, re.DOTALL | re.MULTILINE) if marker in b]
    return block


@pytest.mark.slow
def test_the_readme_recipe_writes_an_env_file_the_jobs_accept(jobs: Jobs, tmp_path: Path) -> None:
    """The README's commands (all but the submit line, with $HOME here and the password typed on stdin) make a
    file readable by its owner only, holding the password, which sweep.sbatch passes to sweeps; the password
    appears in no argument of any command of the recipe."""
    block = _readme_block("read -rsp")
    lines = block.strip().splitlines()
    assert "submit.sh" in lines[-1]
    recipe = "\n".join(lines[:-1]) + "\n"
    assert MLFLOW_SECRET not in recipe
    home = tmp_path / "home"
    home.mkdir()
    done = subprocess.run(["bash", "-c", recipe], env={**os.environ, "HOME": str(home)}, input=MLFLOW_SECRET + "\n",
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    env_file = home / "sweeps.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert f"MLFLOW_TRACKING_PASSWORD={MLFLOW_SECRET}" in env_file.read_text().splitlines()
    record = tmp_path / "record"
    env = job_env(tmp_path, SWEEPS_STORAGE=None, MLFLOW_TRACKING_URI=None, SWEEPS_ENV_FILE=str(env_file),
                  SWEEPS_BIN=str(_fake_sweeps(tmp_path)), FAKE_RECORD=str(record))
    assert jobs.run(SWEEP, tmp_path, env, "job.out", timeout=30) == 0, _log(tmp_path, "job.out")
    _, got = _recorded(record)
    assert got["MLFLOW_TRACKING_USERNAME"] == "sweeps-worker" and got["MLFLOW_TRACKING_PASSWORD"] == MLFLOW_SECRET


@pytest.mark.slow
def test_an_unreadable_env_file_fails_with_one_line(jobs: Jobs, tmp_path: Path) -> None:
    rc = jobs.run(SWEEP, tmp_path, job_env(tmp_path, SWEEPS_ENV_FILE=str(tmp_path / "nope.env")), "job.out",
                  timeout=30)
    out = (tmp_path / "job.out").read_text().strip()
    assert rc == 2 and len(out.splitlines()) == 1 and "SWEEPS_ENV_FILE" in out, out


#: Trials long enough to be interrupted mid-training (3000 epochs), and no pruner.
LONG = {"training": {"epochs": 3000},
        "study": {"n_trials": 4, "pruner": {"name": "none", "options": {"__replace__": True}}}}


@pytest.mark.slow
@pytest.mark.parametrize("target", ["batch-shell", "every-process"])
def test_sigterm_stops_the_task_with_sweeps_code_and_nothing_left_running(jobs: Jobs, tmp_path: Path,
                                                                          target: str) -> None:
    """batch-shell: ``--signal=B:TERM@120`` before the time limit (the bash process only, forwarded by its trap).
    every-process: preemption or scancel (SLURM signals every process of the job: sweeps gets it twice)."""
    sw.write_config(tmp_path, LONG)
    assert jobs.run(PREPARE, tmp_path, job_env(tmp_path), "prepare.out") == 0, _log(tmp_path, "prepare.out")
    proc = jobs.start(SWEEP, tmp_path, job_env(tmp_path), "slurm-4242_0.out")

    def training() -> Any:  # a trial in its training loop, past its first reported epoch
        running = [t for t in sw.load_study(tmp_path).trials if t.state.name == "RUNNING" and t.intermediate_values]
        return (running[0].number,) if running else None  # a tuple: trial 0 is falsy

    (number,) = sw.wait_for(training, 120, "a RUNNING trial with a reported epoch", proc=proc)
    members = group_members(proc.pid)
    assert len(members) >= 3, members  # bash, the launcher, its workers
    started = time.monotonic()
    if target == "batch-shell":
        os.kill(proc.pid, signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
    lead = int(re.fullmatch(r"B:TERM@([0-9]+)", options_of(SWEEP)["signal"]).group(1))
    try:
        rc = proc.wait(timeout=lead)  # SLURM kills the job `lead` s after the signal
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {lead} s after SIGTERM:\n{_log(tmp_path, 'slurm-4242_0.out')}")
    elapsed = time.monotonic() - started
    log = _log(tmp_path, "slurm-4242_0.out")
    print(f"{target}: exited {rc} {elapsed:.1f} s after SIGTERM")
    assert rc == 130, log  # sweeps run's own code for an interrupted sweep
    assert "sweep.sbatch: SIGTERM: stopping sweeps" in log, log
    assert "sweeps run exited 130 (interrupted" in log, log
    # nothing of the job outlives it (multiprocessing's resource tracker goes when it reads the launcher's EOF)
    sw.wait_for(lambda: not group_members(proc.pid), 15, "the job's processes to end")

    study = sw.load_study(tmp_path)
    assert not [t.number for t in study.trials if t.state.name == "RUNNING"], [t.state.name for t in study.trials]
    runs = sw.experiment_runs(tmp_path, "sweeps/tiny")
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    _, children = sw.split_runs(runs)
    interrupted = {int(r.data.tags["sweeps.trial_number"]): r for r in children
                   if r.info.status == "KILLED" and r.data.tags.get("sweeps.reason", "").startswith("interrupted")}
    assert number in interrupted, {int(r.data.tags["sweeps.trial_number"]): (r.info.status,
                                   r.data.tags.get("sweeps.reason")) for r in children}


# -- submit.sh with a fake sbatch ---------------------------------------------------------------------

FAKE_SBATCH = """#!/bin/bash
n=$(( $(ls "$FAKE_DIR" | grep -c '^sbatch-') + 1 ))
printf '%s\\0' "$@" > "$FAKE_DIR/sbatch-$n"
if [[ -n "${FAKE_SBATCH_FAIL_CALL:-}" && "$n" == "$FAKE_SBATCH_FAIL_CALL" ]]; then
    echo "sbatch: error: Batch job submission failed: Invalid account" >&2
    exit 1
fi
echo "$(( 1000 + n ))${FAKE_SBATCH_CLUSTER:+;$FAKE_SBATCH_CLUSTER}"
"""
FAKE_SCANCEL = """#!/bin/bash
printf '%s\\0' "$@" > "$FAKE_DIR/scancel"
"""


def _fake_bin(tmp_path: Path) -> Path:
    fake = tmp_path / "fakebin"
    fake.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    return fake


def _submit(tmp_path: Path, *args: str, **env_extra: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    fake = _fake_bin(tmp_path)
    env = sw.clean_env(SWEEPS_STORAGE="postgresql+psycopg2://sweeps@db/optuna", MLFLOW_TRACKING_URI="http://t:5000",
                       FAKE_DIR=str(fake), PGPASSWORD=None)
    env["PATH"] = f"{fake}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env.update(env_extra)
    env = {k: v for k, v in env.items() if v is not None}
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    proc = subprocess.run(["bash", str(SUBMIT), *args], check=False, cwd=work, env=env, capture_output=True,
                          text=True, timeout=30)
    calls = [(fake / f"sbatch-{i}").read_bytes().decode().split("\0")[:-1]
             for i in range(1, 10) if (fake / f"sbatch-{i}").exists()]
    return proc, calls


@pytest.mark.slow
@pytest.mark.parametrize("cluster", ["", "cluster1"], ids=["jobid", "jobid;cluster"])
def test_submit_sends_prepare_then_the_array_after_it(tmp_path: Path, cluster: str) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "cfg.yaml").write_text("name: tiny\n")
    proc, calls = _submit(tmp_path, "cfg.yaml", "--array=0-15%4", FAKE_SBATCH_CLUSTER=cluster)
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 2, calls
    config = str((tmp_path / "work" / "cfg.yaml").resolve())
    prepare, array = calls
    assert prepare == ["--parsable", f"--export=ALL,SWEEP_CONFIG={config}", str(PREPARE)]
    assert array[0] == "--parsable" and array[-1] == str(SWEEP)
    assert f"--export=ALL,SWEEP_CONFIG={config}" in array
    assert "--dependency=afterok:1001" in array  # the prepare job's id, without ";cluster"
    assert "--kill-on-invalid-dep=yes" in array
    assert "--array=0-15%4" in array and array.index("--array=0-15%4") < len(array) - 1
    assert "prepare job 1001" in proc.stdout and "sweep array job 1002" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_submit_cancels_prepare_when_the_array_is_refused(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "cfg.yaml").write_text("name: tiny\n")
    proc, calls = _submit(tmp_path, "cfg.yaml", FAKE_SBATCH_FAIL_CALL="2")
    assert proc.returncode != 0 and len(calls) == 2
    assert (tmp_path / "fakebin" / "scancel").read_bytes().split(b"\0")[:-1] == [b"1001"]
    assert "cancelling prepare job 1001" in proc.stderr, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no-argument", "no-file", "comma", "no-storage"])
def test_submit_refuses_bad_input_before_submitting_anything(tmp_path: Path, case: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    name = "a,b.yaml" if case == "comma" else "cfg.yaml"
    if case != "no-file":
        (work / name).write_text("name: tiny\n")
    args = [] if case == "no-argument" else [name]
    extra = {"SWEEPS_STORAGE": None} if case == "no-storage" else {}
    proc, calls = _submit(tmp_path, *args, **extra)
    assert proc.returncode == 2, proc.stderr
    assert calls == []
    expected = {"no-argument": "usage:", "no-file": "no sweep config", "comma": "comma",
                "no-storage": "SWEEPS_STORAGE is not set"}[case]
    assert expected in proc.stderr, proc.stderr


def test_submit_is_executable_and_the_batch_scripts_start_with_bash() -> None:
    assert os.access(SUBMIT, os.X_OK)
    for script in SCRIPTS:
        assert script.read_text().startswith("#!/bin/bash\n"), script.name
    assert shutil.which("bash"), "bash is needed to run these scripts"


@pytest.mark.slow
@pytest.mark.parametrize("var", ["PGPASSWORD", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"])
def test_submit_refuses_a_password_in_its_environment(tmp_path: Path, var: str) -> None:
    """sbatch --export=ALL would give it to SLURM, which keeps a job's environment: it belongs in the env file."""
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "cfg.yaml").write_text("name: tiny\n")
    proc, calls = _submit(tmp_path, "cfg.yaml", **{var: MLFLOW_SECRET})
    assert proc.returncode == 2 and calls == []
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and var in line and "SWEEPS_ENV_FILE" in line, proc.stderr
    assert MLFLOW_SECRET not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_submit_passes_the_env_file_by_its_path_and_never_its_passwords(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "cfg.yaml").write_text("name: tiny\n")
    env_file = tmp_path / "sweeps.env"
    env_file.write_text(f"MLFLOW_TRACKING_USERNAME=sweeps-worker\nMLFLOW_TRACKING_PASSWORD={MLFLOW_SECRET}\n")
    env_file.chmod(0o600)
    proc, calls = _submit(tmp_path, "cfg.yaml", SWEEPS_STORAGE=None, MLFLOW_TRACKING_URI=None,
                          SWEEPS_ENV_FILE=str(env_file))
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 2
    assert not any(MLFLOW_SECRET in arg for call in calls for arg in call)
    assert MLFLOW_SECRET not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_submit_refuses_an_env_file_others_may_read(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "cfg.yaml").write_text("name: tiny\n")
    env_file = tmp_path / "sweeps.env"
    env_file.write_text(f"MLFLOW_TRACKING_PASSWORD={MLFLOW_SECRET}\n")
    env_file.chmod(0o644)
    proc, calls = _submit(tmp_path, "cfg.yaml", SWEEPS_ENV_FILE=str(env_file))
    assert proc.returncode == 2 and calls == []
    assert "chmod 600" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
