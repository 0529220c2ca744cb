"""deploy/kubernetes, checked offline (no cluster, no kubectl here).

The kustomizations are rendered by this module (resources and configMapGenerator: the only fields
they use; an unknown field fails the test instead of being skipped), every object is validated
against the Kubernetes schemas (``kubernetes-validate``, strict: unknown fields are errors), and the
objects are checked against each other and against what they run: the Secret and ConfigMaps they
name exist or are documented, ``$(VAR)`` expansions resolve, Services select pods and ports that
exist, URLs name those Services, the worker Job is a work queue that outlives a trial's shutdown,
the ``sweeps``/``mlflow server`` command lines parse, PgBouncer's settings fit PostgreSQL's
connection budget, the tracking server runs basic-auth (deploy/mlflow/basic_auth.ini, in the image)
and the sweeps pods log in as a user of their own, not its admin. No password is spelled anywhere
under deploy/, in docker-compose.yml, .env.example or the Dockerfile.
"""

from __future__ import annotations

import ast
import configparser
import itertools
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
BASE, WORKERS = K8S, K8S / "workers"
KUSTOMIZATIONS = (BASE, WORKERS)
#: Secrets the manifests may name: the user creates them (README: kubectl create secret ...).
DOCUMENTED_SECRETS = {"sweeps-db": {"password"},
                      "sweeps-mlflow": {"admin-password", "secret-key", "worker-password"}}
#: The basic-auth settings: copied into the image (Dockerfile), read by the server from this path.
AUTH_INI = REPO / "deploy" / "mlflow" / "basic_auth.ini"
AUTH_INI_IN_IMAGE = "/app/deploy/mlflow/basic_auth.ini"
ADD_USER_IN_IMAGE = "/app/deploy/mlflow/add_user.py"
#: PostgreSQL's default max_connections (the manifests keep it) and superuser_reserved_connections.
PG_MAX_CONNECTIONS, PG_SUPERUSER_RESERVED = 100, 3
POD_OWNERS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"}
#: The kustomization fields the renderer below understands.
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "configMapGenerator", "generatorOptions"}


# --- rendering --------------------------------------------------------------------------------------

@dataclass
class Rendered:
    """The objects of one kustomization, as ``kubectl apply -k`` would send them (before kustomize's
    name hashing), with the file each came from."""

    root: Path
    objects: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: generated ConfigMap name -> (data, name hashed by kustomize?)
    configmaps: dict[str, tuple[dict[str, str], bool]] = field(default_factory=dict)
    #: every file the kustomization reads
    files: list[Path] = field(default_factory=list)


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def render(root: Path) -> Rendered:
    kust = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(kust) - KUSTOMIZATION_FIELDS
    assert not unknown, f"{root}/kustomization.yaml uses {unknown}: teach tests/deploy/test_kubernetes.py to render it"
    assert kust["kind"] == "Kustomization"
    out = Rendered(root)
    for entry in kust.get("resources", []):
        path = root / entry
        out.files.append(path)
        if path.is_dir():
            sub = render(path)
            out.objects += sub.objects
            out.configmaps.update(sub.configmaps)
            out.files += sub.files
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.objects.append((str(path.relative_to(REPO)), doc))
    hashed_default = not kust.get("generatorOptions", {}).get("disableNameSuffixHash", False)
    for gen in kust.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for spec in gen.get("files", []):
            key, _, rel = spec.partition("=") if "=" in spec else (Path(spec).name, "", spec)
            path = root / rel
            out.files.append(path)
            data[key] = path.read_text()
        for literal in gen.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        hashed = not gen.get("options", {}).get("disableNameSuffixHash", not hashed_default)
        out.configmaps[gen["name"]] = (data, hashed)
        doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data}
        out.objects.append((f"{root.relative_to(REPO)}/kustomization.yaml", doc))
    return out


@pytest.fixture(scope="module")
def rendered() -> dict[Path, Rendered]:
    return {root: render(root) for root in KUSTOMIZATIONS}


@pytest.fixture(scope="module")
def objects(rendered) -> list[dict[str, Any]]:
    """Every object of both kustomizations (the base and the workers)."""
    return [doc for r in rendered.values() for _, doc in r.objects]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(owner, pod template) of every workload."""
    for o in objects:
        if o["kind"] in POD_OWNERS:
            yield o, o["spec"]["template"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec.get("initContainers", []) + spec["containers"]


# --- schema -----------------------------------------------------------------------------------------

def _versions() -> list[str]:
    try:
        from kubernetes_validate.utils import latest_version, major_minor
    except ImportError:  # the test itself then fails on the import, naming the package (the [test] extra)
        return ["1.30"]
    return sorted({"1.30", major_minor(latest_version())})


@pytest.mark.parametrize("version", _versions())
def test_every_object_is_valid_for_kubernetes(rendered, version):
    """Strict schema validation (an unknown or misplaced field is an error), for the oldest version
    the manifests claim (1.30) and the newest the installed kubernetes-validate knows."""
    import kubernetes_validate

    count, errors = 0, []
    for r in rendered.values():
        for source, doc in r.objects:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                where = "/".join(map(str, err.absolute_path))
                errors.append(f"{source}: {doc['kind']}/{doc['metadata']['name']}: {err.message} at {where}")
            count += 1
    assert errors == []
    assert count >= 12  # 3 Services, StatefulSet, 2 Deployments, PVC, 2 Jobs, 3 ConfigMaps


def test_strict_validation_rejects_a_misspelt_field(rendered):
    """The validation above would catch a typo (a non-strict schema accepts unknown fields)."""
    import kubernetes_validate

    job = dict(by_kind([d for _, d in rendered[WORKERS].objects], "Job")["sweeps-workers"])
    job["spec"] = {**job["spec"], "paralelism": 8}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.30", strict=True)


def test_kustomizations_read_only_their_own_folder_and_list_every_manifest(rendered):
    """kubectl's kustomize refuses files outside the kustomization's folder (load restrictor), and a
    manifest left out of ``resources`` would silently not be applied."""
    for root, r in rendered.items():
        outside = [str(p) for p in r.files if not _inside(p, root)]
        assert not outside, f"{root}/kustomization.yaml reads files outside its folder: {outside}"
        listed = {p.resolve() for p in r.files}
        for path in root.glob("*.y*ml"):
            if path.name == "kustomization.yaml":
                continue
            docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
            if any("apiVersion" in d and "kind" in d for d in docs):
                assert path.resolve() in listed, f"{path.relative_to(REPO)} is not in {root.name}/kustomization.yaml"


def test_postgres_init_sql_is_the_compose_one():
    """kustomize cannot read deploy/postgres-init.sql (outside its folder): the copy must not drift."""
    assert (K8S / "postgres-init.sql").read_bytes() == (REPO / "deploy" / "postgres-init.sql").read_bytes()


def test_no_secret_object_is_applied(objects):
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"] == []


# --- references -------------------------------------------------------------------------------------

def _refs(spec: dict[str, Any]) -> Iterator[tuple[str, str, str | None]]:
    """(kind, name, key or None) of every Secret and ConfigMap a pod spec uses."""
    for c in containers(spec):
        for env in c.get("env", []):
            src = env.get("valueFrom", {})
            if "secretKeyRef" in src:
                yield "Secret", src["secretKeyRef"]["name"], src["secretKeyRef"]["key"]
            if "configMapKeyRef" in src:
                yield "ConfigMap", src["configMapKeyRef"]["name"], src["configMapKeyRef"]["key"]
        for env in c.get("envFrom", []):
            if "secretRef" in env:
                yield "Secret", env["secretRef"]["name"], None
            if "configMapRef" in env:
                yield "ConfigMap", env["configMapRef"]["name"], None
    for vol in spec.get("volumes", []):
        if "secret" in vol:
            for item in vol["secret"].get("items", [{"key": None}]):
                yield "Secret", vol["secret"]["secretName"], item["key"]
        if "configMap" in vol:
            for item in vol["configMap"].get("items", [{"key": None}]):
                yield "ConfigMap", vol["configMap"]["name"], item["key"]


def shell_lines(text: str) -> list[str]:
    """The lines of ``text`` with shell line continuations (a trailing backslash) joined."""
    return text.replace("\\\n", " ").splitlines()


def test_shell_lines_join_continuations():
    assert shell_lines("a \\\n    b\nc\n") == ["a      b", "c"]


def test_secrets_and_configmaps_named_exist_or_are_documented(rendered):
    """Every Secret named is one the README tells the user to create (with that key, its value from a
    command, never spelled); every ConfigMap named is generated, with the key used, by the same
    kustomization or, without a name hash (kustomize renames hashed ones only where it generates
    them), by the base."""
    commands = [line.strip() for line in shell_lines((K8S / "README.md").read_text())
                if line.strip().startswith("kubectl create secret generic ")]
    for name, keys in DOCUMENTED_SECRETS.items():
        (command,) = [c for c in commands if shlex.split(c)[4] == name]
        given = dict(re.findall(r'--from-literal=([a-z-]+)="?(\$\([^)]*\))', command))
        assert set(given) == keys, f"README: {command!r} sets {set(given)}, the manifests use {keys}"
    base_cms = rendered[BASE].configmaps
    seen = set()
    for root, r in rendered.items():
        for owner, template in pod_templates([d for _, d in r.objects]):
            where = f"{owner['kind']}/{owner['metadata']['name']}"
            for kind, name, key in _refs(template["spec"]):
                seen.add((kind, name))
                if kind == "Secret":
                    assert name in DOCUMENTED_SECRETS, f"{where} uses Secret {name!r}, which no one creates"
                    assert key is None or key in DOCUMENTED_SECRETS[name], f"{where}: Secret {name} has no key {key}"
                    continue
                if name in r.configmaps:
                    data, _ = r.configmaps[name]
                else:
                    assert name in base_cms, f"{where} uses ConfigMap {name!r}, which is not generated"
                    data, hashed = base_cms[name]
                    assert not hashed, f"{where} refers to {name!r} from {root.name}/, but the base hashes its name"
                assert key is None or key in data, f"{where}: ConfigMap {name} has no key {key!r}"
    assert ("Secret", "sweeps-db") in seen and ("ConfigMap", "sweep-config") in seen


EXPANSION = re.compile(r"(\$+)\(([A-Za-z_][A-Za-z0-9_]*)\)")


def undefined_expansions(container: dict[str, Any]) -> list[str]:
    """``$(VAR)`` references Kubernetes would leave unexpanded: in an env value, VAR must be defined
    earlier in the same list; in command/args, anywhere in env. ``$$(VAR)`` is an escape."""
    problems = []
    defined: list[str] = []
    names = [e["name"] for e in container.get("env", [])]
    for env in container.get("env", []):
        for dollars, var in EXPANSION.findall(env.get("value", "")):
            if len(dollars) % 2 and var not in defined:
                problems.append(f"env {env['name']}: $({var}) " + ("defined later" if var in names else "undefined"))
        defined.append(env["name"])
    for arg in container.get("command", []) + container.get("args", []):
        for dollars, var in EXPANSION.findall(arg):
            if len(dollars) % 2 and var not in names:
                problems.append(f"command/args: $({var}) undefined")
    return problems


def test_expansions_refer_to_variables_defined_before(objects):
    used = 0
    for owner, template in pod_templates(objects):
        for c in containers(template["spec"]):
            assert undefined_expansions(c) == [], f"{owner['metadata']['name']}/{c['name']}"
            used += sum(len(EXPANSION.findall(a)) for a in c.get("command", []) + c.get("args", []))
    assert used >= 2  # the Jobs pass $(SWEEP_CONFIG) to sweeps


def test_the_expansion_check_finds_what_kubernetes_would_not_expand():
    container = {"name": "c", "command": ["run", "$(LATER)", "$(NOWHERE)", "$$(ESCAPED)"],
                 "env": [{"name": "URL", "value": "postgresql://u:$(LATER)@h/db"}, {"name": "LATER", "value": "x"},
                         {"name": "OK", "value": "$(URL)"}]}
    assert undefined_expansions(container) == ["env URL: $(LATER) defined later", "command/args: $(NOWHERE) undefined"]


def _ports(container: dict[str, Any]) -> set[int | str]:
    return {p["containerPort"] for p in container.get("ports", [])} | \
        {p["name"] for p in container.get("ports", []) if "name" in p}


def test_services_select_pods_and_their_ports(objects):
    templates = list(pod_templates(objects))
    for name, svc in by_kind(objects, "Service").items():
        selector = svc["spec"]["selector"]
        selected = [t for _, t in templates if selector.items() <= t["metadata"].get("labels", {}).items()]
        assert selected, f"Service {name} selects no pod ({selector})"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for t in selected:
                assert any(target in _ports(c) for c in t["spec"]["containers"]), \
                    f"Service {name}: no container port {target!r}"


def _service_ports(objects) -> dict[str, set[int]]:
    return {n: {p["port"] for p in s["spec"]["ports"]} for n, s in by_kind(objects, "Service").items()}


URL_HOST = re.compile(r"://(?:[^@/\s]*@)?([A-Za-z0-9.-]+):(\d+)")


def _pgbouncer_ini() -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"), inline_comment_prefixes=None)
    ini.read_string((K8S / "pgbouncer.ini").read_text())
    return ini


def _conninfo(value: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in value.split())


def test_every_host_and_port_named_is_a_service(objects):
    """URLs in env values and PgBouncer's [databases] name Services of this deployment and their ports."""
    services = _service_ports(objects)
    named = []
    for _, template in pod_templates(objects):
        for c in containers(template["spec"]):
            for text in [e.get("value", "") for e in c.get("env", [])] + c.get("command", []) + c.get("args", []):
                named += URL_HOST.findall(text)
    named += [(ci["host"], ci["port"]) for ci in map(_conninfo, _pgbouncer_ini()["databases"].values())]
    assert {h for h, _ in named} >= {"pgbouncer", "mlflow", "postgres"}
    for host, port in named:
        assert int(port) in services.get(host, set()), f"{host}:{port} is not a Service port ({services})"


# --- the Jobs ---------------------------------------------------------------------------------------

def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_worker_job_is_a_work_queue_that_outlives_a_trial_shutdown(rendered):
    from sweeps.engine.runner import INTERRUPT_KILL_AFTER

    job = by_kind([d for _, d in rendered[WORKERS].objects], "Job")["sweeps-workers"]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["parallelism"] >= 1
    assert "completions" not in spec          # work queue: done when a pod exits 0 and all have ended
    assert spec["backoffLimit"] >= spec["parallelism"]
    assert pod["restartPolicy"] == "OnFailure"
    # SIGTERM: the launcher waits INTERRUPT_KILL_AFTER for its worker, then ends its runs and exits
    assert pod["terminationGracePeriodSeconds"] >= INTERRUPT_KILL_AFTER + 15
    (worker,) = pod["containers"]
    argv = worker["command"] + worker.get("args", [])
    assert argv[:2] == ["sweeps", "run"]      # no shell in between: sweeps itself gets SIGTERM
    assert argv[argv.index("--workers") + 1] == "1"
    env = _env(worker)
    assert all(env[v] == "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"))
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(worker["resources"][kind])
    assert worker["resources"]["requests"]["cpu"] in ("1", 1, "1000m")
    # not in the base: the workers are applied once prepare has completed
    assert "sweeps-workers" not in by_kind([d for _, d in rendered[BASE].objects], "Job")


def test_prepare_job_runs_once_in_the_base(rendered):
    job = by_kind([d for _, d in rendered[BASE].objects], "Job")["sweeps-prepare"]
    assert job["spec"].get("parallelism", 1) == 1 and job["spec"].get("completions", 1) == 1
    (prepare,) = job["spec"]["template"]["spec"]["containers"]
    assert prepare["command"][:2] == ["sweeps", "prepare"]


#: The Jobs that run sweeps (the other, mlflow-users, adds their MLflow user).
SWEEPS_JOBS = ("sweeps-prepare", "sweeps-workers")


def _job_containers(objects) -> dict[str, dict[str, Any]]:
    return {j["metadata"]["name"]: j["spec"]["template"]["spec"]["containers"][0]
            for j in by_kind(objects, "Job").values()}


def test_prepare_and_workers_share_the_study_and_the_sweep(objects):
    """Both Jobs must address the same study: same storage, tracking URI, config and mount."""
    jobs = _job_containers(objects)
    prep, work = jobs["sweeps-prepare"], jobs["sweeps-workers"]
    for var in ("SWEEPS_STORAGE", "MLFLOW_TRACKING_URI", "SWEEP_CONFIG", "PGPASSWORD", "MLFLOW_TRACKING_USERNAME",
                "MLFLOW_TRACKING_PASSWORD"):
        assert _env(prep)[var] == _env(work)[var], var
    assert prep["volumeMounts"] == work["volumeMounts"]
    assert prep["command"][2] == work["command"][2] == "$(SWEEP_CONFIG)"


def _sweeps_argvs(objects) -> Iterator[tuple[str, list[str]]]:
    for owner, template in pod_templates(objects):
        for c in containers(template["spec"]):
            argv = c.get("command", []) + c.get("args", [])
            if argv[:2] in (["sh", "-c"], ["/bin/sh", "-c"]):
                argv = shlex.split(argv[2])
            if argv and argv[0] == "sweeps":
                yield f"{owner['metadata']['name']}/{c['name']}", argv


def test_sweeps_command_lines_use_options_the_cli_has(objects):
    from click.testing import CliRunner

    from sweeps.cli.commands import main

    checked = 0
    for where, argv in _sweeps_argvs(objects):
        result = CliRunner().invoke(main, [argv[1], "--help"])
        assert result.exit_code == 0, f"{where}: 'sweeps {argv[1]}' is not a command"
        for token in argv[2:]:
            if token.startswith("-"):
                option = token.split("=", 1)[0]
                assert re.search(rf"(^|[\s,]){re.escape(option)}([\s,=]|$)", result.output, re.MULTILINE), \
                    f"{where}: 'sweeps {argv[1]}' has no option {option}"
                checked += 1
    assert checked >= 2  # run --workers --quiet


def test_sweep_config_default_is_in_the_image_and_the_configmap_is_a_valid_sweep(rendered):
    from sweeps.config import load_config

    data, _ = rendered[BASE].configmaps["sweep-config"]
    default = data["SWEEP_CONFIG"]
    # the image: WORKDIR /app, COPY examples ./examples
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "WORKDIR /app" in dockerfile and "COPY examples ./examples" in dockerfile
    assert default == "/config/sweep.yaml" or default.startswith("/app/examples/"), default
    if default.startswith("/app/examples/"):
        load_config(REPO / "examples" / default.removeprefix("/app/examples/"))
    load_config(K8S / "sweep.yaml")
    # where the pods find sweep.yaml is where the README and kustomization.yaml say
    jobs = _job_containers([d for r in rendered.values() for _, d in r.objects])
    for c in (jobs[name] for name in SWEEPS_JOBS):
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == "sweep-config"]
        assert f"{mount['mountPath']}/sweep.yaml" == "/config/sweep.yaml"
    assert "SWEEP_CONFIG=/config/sweep.yaml" in (K8S / "kustomization.yaml").read_text()
    assert "/config/sweep.yaml" in (K8S / "README.md").read_text()


# --- the servers ------------------------------------------------------------------------------------

def _deployment_container(objects, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    dep = by_kind(objects, "Deployment")[name]
    return dep, dep["spec"]["template"]["spec"]["containers"][0]


def test_pgbouncer_pools_transactions_within_postgres_connection_budget(objects):
    from sweeps.config import HEARTBEAT_GRACE

    ini = _pgbouncer_ini()
    pgb = ini["pgbouncer"]
    assert pgb["pool_mode"] == "transaction"
    assert pgb["auth_type"] == "scram-sha-256"
    assert int(pgb["max_client_conn"]) >= 1000
    # sweeps sends options=-c idle_in_transaction_session_timeout=...: PgBouncer must not refuse it
    assert {"options", "extra_float_digits"} <= {p.strip() for p in pgb["ignore_startup_parameters"].split(",")}
    # ... and ends idle transactions itself, before a lost trial's repair would wait on its locks
    assert 0 < int(pgb["idle_transaction_timeout"]) < HEARTBEAT_GRACE
    assert pgb.get("server_reset_query", "DISCARD ALL").strip() == ""  # unused in transaction pooling
    # the databases: the study's (POSTGRES_DB), MLflow's and basic-auth's (the init SQL), nothing else
    sts = by_kind(objects, "StatefulSet")["postgres"]
    pg = sts["spec"]["template"]["spec"]["containers"][0]
    init_sql = (K8S / "postgres-init.sql").read_text()
    databases = {name: _conninfo(v)["dbname"] for name, v in ini["databases"].items()}
    assert databases == {"optuna": _env(pg)["POSTGRES_DB"], "mlflow": "mlflow", "mlflow_auth": "mlflow_auth"}
    assert set(re.findall(r"CREATE DATABASE (\w+) OWNER sweeps;", init_sql)) == {"mlflow", "mlflow_auth"}
    # server connections: every pool full, on every replica, fit in max_connections with room to spare
    assert not any("max_connections" in a for a in pg.get("command", []) + pg.get("args", []))
    replicas = by_kind(objects, "Deployment")["pgbouncer"]["spec"]["replicas"]
    per_db = int(pgb["default_pool_size"]) + int(pgb.get("reserve_pool_size", 0))
    assert 15 <= int(pgb["default_pool_size"]) <= 25
    assert replicas * len(databases) * per_db <= PG_MAX_CONNECTIONS - PG_SUPERUSER_RESERVED - 10


def test_pgbouncer_container_starts_with_this_config_and_its_auth_file(objects):
    """The container's script writes the auth_file the ini names, on a writable in-memory volume, and
    starts pgbouncer with the ini from the ConfigMap, listening on the Service's port."""
    dep, c = _deployment_container(objects, "pgbouncer")
    pgb = _pgbouncer_ini()["pgbouncer"]
    script = c["args"][0]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    auth_file = Path(pgb["auth_file"])
    (auth_vol,) = [n for n, p in mounts.items() if Path(p) == auth_file.parent]
    assert volumes[auth_vol]["emptyDir"]["medium"] == "Memory"
    assert f"> {auth_file}" in script and "umask 077" in script
    assert '"$SWEEPS_DB_USER" "$SWEEPS_DB_PASSWORD"' in script
    assert _env(c)["SWEEPS_DB_PASSWORD"] == {"secretKeyRef": {"name": "sweeps-db", "key": "password"}}
    (cfg_vol,) = [n for n, v in volumes.items() if v.get("configMap", {}).get("name") == "pgbouncer-config"]
    assert f"exec pgbouncer {mounts[cfg_vol]}/pgbouncer.ini" in script
    assert int(pgb["listen_port"]) in _ports(c) and int(pgb["listen_port"]) in _service_ports(objects)["pgbouncer"]
    assert pgb.get("unix_socket_dir", "/tmp").strip() == "" or not c["securityContext"].get("readOnlyRootFilesystem")
    assert c["image"].startswith("edoburu/pgbouncer:")


def test_mlflow_server_command_line_parses_and_its_pool_is_set(objects, monkeypatch):
    import click
    from mlflow import environment_variables as mlflow_env
    from mlflow.cli import server

    _, c = _deployment_container(objects, "mlflow")
    assert c["command"] == ["mlflow", "server"]
    for var in [p.envvar for p in server.params if isinstance(getattr(p, "envvar", None), str)]:
        monkeypatch.delenv(var, raising=False)
    ctx = server.make_context("server", list(c["args"]))  # raises on an unknown option or bad value
    assert ctx.params["app_name"] == "basic-auth"
    env = _env(c)
    # the backend store comes from the env var `mlflow server --backend-store-uri` reads
    option = {p.name: p for p in server.params}["backend_store_uri"]
    assert isinstance(option, click.Option) and option.envvar in env
    assert ctx.params["backend_store_uri"] is None and ctx.params["workers"] == "2"
    assert env[option.envvar].startswith("postgresql+psycopg2://") and env[option.envvar].endswith("@pgbouncer:6432/mlflow")
    # the pool variables exist in this MLflow, with values it applies (it ignores 0)
    for var in ("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"):
        assert getattr(mlflow_env, var).name == var
        assert int(env[var]) > 0
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert ctx.params["artifacts_destination"] == "/mlartifacts"
    assert "/mlartifacts" in {m["mountPath"] for m in c["volumeMounts"]}


def test_mlflow_accepts_the_hosts_clients_use_and_probes_health(objects):
    from mlflow.server.security_utils import is_allowed_host_header, is_health_endpoint

    _, c = _deployment_container(objects, "mlflow")
    allowed = c["args"][c["args"].index("--allowed-hosts") + 1].split(",")
    tracking = {_env(j)["MLFLOW_TRACKING_URI"] for j in _job_containers(objects).values()}
    hosts = {u.split("://", 1)[1].rstrip("/") for u in tracking} | {"localhost:5000", "127.0.0.1:5000"}
    for host in hosts | {"mlflow.sweeps.svc.cluster.local:5000"}:
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "evil.example.com:5000")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert is_health_endpoint(c[probe]["httpGet"]["path"]), probe  # exempt from the host check


def test_nothing_is_exposed_outside_the_cluster(objects):
    for name, svc in by_kind(objects, "Service").items():
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", name
    assert not {"Ingress", "Route", "Gateway", "HTTPRoute"} & {o["kind"] for o in objects}


def test_images_are_pinned_or_built_here(objects):
    """Third-party images carry a version tag; the project's image is pulled only if absent (a locally
    built or `kind load`ed nnsweeps:latest would otherwise be pulled, and fail)."""
    for owner, template in pod_templates(objects):
        for c in containers(template["spec"]):
            image = c["image"]
            if image.startswith("nnsweeps:"):
                assert c.get("imagePullPolicy") == "IfNotPresent", f"{owner['metadata']['name']}/{c['name']}"
            else:
                assert ":" in image and not image.endswith(":latest"), image


def test_postgres_statefulset_is_probed_and_initialised(objects):
    sts = by_kind(objects, "StatefulSet")["postgres"]
    assert sts["spec"]["serviceName"] in by_kind(objects, "Service")
    assert by_kind(objects, "Service")[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    pod = sts["spec"]["template"]["spec"]
    (pg,) = pod["containers"]
    assert pg["image"] == "postgres:16"
    assert pg["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    init_mount = [m for m in pg["volumeMounts"] if m["mountPath"] == "/docker-entrypoint-initdb.d"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == init_mount[0]["name"]]
    assert vol["configMap"]["name"] == "postgres-init"
    claim_names = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    data_mount = [m for m in pg["volumeMounts"] if m["mountPath"] == "/var/lib/postgresql/data"]
    assert data_mount and data_mount[0]["name"] in claim_names
    assert _env(pg)["PGDATA"].startswith("/var/lib/postgresql/data/")  # not the volume root (lost+found)


# --- the tracking server's users --------------------------------------------------------------------

def _secret(name: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


@pytest.fixture
def auth_config(monkeypatch):
    """deploy/mlflow/basic_auth.ini as MLflow's basic-auth app reads it (no admin password from here)."""
    from mlflow.server.auth.config import read_auth_config

    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(AUTH_INI))
    for var in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_AUTH_ADMIN_USERNAME"):
        monkeypatch.delenv(var, raising=False)
    return read_auth_config()


def test_the_image_holds_the_auth_settings_and_add_user_where_the_pods_look():
    """The Dockerfile installs the extra with mlflow[auth] and copies deploy/mlflow to /app/deploy/mlflow."""
    import tomllib

    dockerfile = (REPO / "Dockerfile").read_text()
    workdir = re.findall(r"^WORKDIR (\S+)", dockerfile.split("COPY deploy/mlflow", 1)[0], re.MULTILINE)
    assert workdir[-1] == "/app" and re.search(r"^COPY deploy/mlflow \./deploy/mlflow$", dockerfile, re.MULTILINE)
    assert (REPO / AUTH_INI_IN_IMAGE.removeprefix("/app/")).is_file()
    assert (REPO / ADD_USER_IN_IMAGE.removeprefix("/app/")).is_file()
    (extra,) = re.findall(r'^RUN pip install "\.\[(\w+)\]"$', dockerfile, re.MULTILINE)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("mlflow[auth]") for req in extras[extra]), extras[extra]
    assert any(req.startswith("psycopg2") for req in extras[extra]), extras[extra]


def test_the_auth_settings_keep_users_in_postgres_through_pgbouncer_without_a_password(objects, auth_config):
    """The user store is the database mlflow_auth behind the PgBouncer Service (whose ini serves it, and which
    the init SQL creates), reached with PGPASSWORD: no password in the URL or in the file."""
    from urllib.parse import urlsplit

    from mlflow.server.auth.permissions import ALL_PERMISSIONS

    url = urlsplit(auth_config.database_uri)
    assert url.scheme == "postgresql+psycopg2" and url.password is None and url.username == "sweeps"
    assert url.port in _service_ports(objects)[url.hostname]
    database = url.path.lstrip("/")
    assert database in _pgbouncer_ini()["databases"]
    assert f"CREATE DATABASE {database} OWNER sweeps;" in (REPO / "deploy" / "postgres-init.sql").read_text()
    assert auth_config.admin_username and auth_config.admin_password is None
    assert auth_config.default_permission in ALL_PERMISSIONS
    assert auth_config.auth_cache_ttl_seconds > 0  # a slow hash per request otherwise
    ini = configparser.ConfigParser()
    ini.read_string(AUTH_INI.read_text())
    assert not {k for k in ini["mlflow"] if PASSWORD_KEY.search(k) or "secret" in k}


def test_mlflow_runs_basic_auth_with_its_secrets_from_the_secret(objects):
    from mlflow import environment_variables as mlflow_env

    _, c = _deployment_container(objects, "mlflow")
    args = c["args"]
    assert args[args.index("--app-name") + 1] == "basic-auth"
    env = _env(c)
    assert env[mlflow_env.MLFLOW_AUTH_CONFIG_PATH.name] == AUTH_INI_IN_IMAGE
    assert env[mlflow_env.MLFLOW_AUTH_ADMIN_PASSWORD.name] == _secret("sweeps-mlflow", "admin-password")
    assert env[mlflow_env.MLFLOW_FLASK_SERVER_SECRET_KEY.name] == _secret("sweeps-mlflow", "secret-key")
    assert env["PGPASSWORD"] == _secret("sweeps-db", "password")  # the user store's login too


def test_the_users_job_adds_the_workers_user_as_the_admin(objects, auth_config):
    jobs = _job_containers(objects)
    users = jobs["mlflow-users"]
    assert users["command"] == ["python", ADD_USER_IN_IMAGE]
    env = _env(users)
    assert env["MLFLOW_TRACKING_URI"] == _env(jobs["sweeps-prepare"])["MLFLOW_TRACKING_URI"]
    assert env["MLFLOW_TRACKING_USERNAME"] == auth_config.admin_username
    assert env["MLFLOW_TRACKING_PASSWORD"] == _secret("sweeps-mlflow", "admin-password")
    assert env["SWEEPS_MLFLOW_USER"] != auth_config.admin_username
    assert env["SWEEPS_MLFLOW_USER_PASSWORD"] == _secret("sweeps-mlflow", "worker-password")
    # applied with the server (the base), after it answers
    job = by_kind(objects, "Job")["mlflow-users"]
    (wait,) = job["spec"]["template"]["spec"]["initContainers"]
    assert "http://mlflow:5000/health" in wait["command"][-1]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"


def test_sweeps_pods_log_in_as_the_workers_user_not_the_admin(objects, auth_config):
    jobs = _job_containers(objects)
    users = _env(jobs["mlflow-users"])
    for name in SWEEPS_JOBS:
        env = _env(jobs[name])
        assert env["MLFLOW_TRACKING_USERNAME"] == users["SWEEPS_MLFLOW_USER"] != auth_config.admin_username, name
        assert env["MLFLOW_TRACKING_PASSWORD"] == users["SWEEPS_MLFLOW_USER_PASSWORD"], name
    # the admin's password reaches the server and the users Job, nothing else
    holders = {f"{owner['metadata']['name']}/{c['name']}" for owner, template in pod_templates(objects)
               for c in containers(template["spec"]) for e in c.get("env", [])
               if e.get("valueFrom") == _secret("sweeps-mlflow", "admin-password")}
    assert holders == {"mlflow/mlflow", "mlflow-users/add-user"}


def test_prepare_waits_until_the_workers_login_works(objects):
    """The prepare pod starts once mlflow-users is done: its init container logs in with the same user."""
    job = by_kind(objects, "Job")["sweeps-prepare"]
    (wait,) = job["spec"]["template"]["spec"]["initContainers"]
    prepare = _env(job["spec"]["template"]["spec"]["containers"][0])
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert _env(wait)[var] == prepare[var], var
    script = wait["command"][-1]
    assert "Authorization" in script and "/api/2.0/mlflow/" in script
    ast.parse(script)


# --- documentation ----------------------------------------------------------------------------------

def test_readme_commands_name_objects_that_exist(objects):
    readme = "\n".join(shell_lines((K8S / "README.md").read_text()))
    for command in ("kubectl apply -k deploy/kubernetes", "kubectl apply -k deploy/kubernetes/workers",
                    "kubectl wait --for=condition=complete job/sweeps-prepare",
                    "kubectl port-forward svc/mlflow 5000:5000"):
        assert command in readme, command
    kinds = {"job": "Job", "svc": "Service", "deploy": "Deployment", "statefulset": "StatefulSet"}
    named = 0
    for line in readme.splitlines():
        if not line.strip().startswith("kubectl "):
            continue
        tokens = shlex.split(line.split("#", 1)[0])
        for before, token in itertools.pairwise(tokens):
            kind, _, name = token.partition("/")
            if kind in kinds and name and before not in ("-k", "-f"):
                assert name in by_kind(objects, kinds[kind]), f"README: {line.strip()!r}: no {kinds[kind]} {name}"
                named += 1
    assert named >= 4
    assert "parallelism" in readme
    assert "## Kubernetes" in (REPO / "docs" / "deployment.md").read_text()


# --- passwords --------------------------------------------------------------------------------------

PASSWORD_KEY = re.compile(r"passw(or)?d", re.IGNORECASE)
#: user:password@ in a URL
URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@'\"]+:([^@\s/'\"]*)@")
#: key: value / key=value where the key names a password (YAML, ini, conninfo, env files, CLI flags)
KEY_PASSWORD = re.compile(r"""([A-Za-z0-9_.-]*passw(?:or)?d[A-Za-z0-9_]*)["']?\s*[:=]\s*(["']?)([^\s"',}]*)""", re.IGNORECASE)
#: SQL: PASSWORD 'x'
SQL_PASSWORD = re.compile(r"\bPASSWORD\s+'([^']*)'", re.IGNORECASE)


def _is_reference(value: str) -> bool:
    """``$(VAR)``, ``${VAR...}``, ``$VAR``, ``$(command)``, printf's ``%s``: a value taken from elsewhere at run
    time; ``<placeholder>``: one the reader fills in."""
    return value == "" or value.startswith(("$", "%", "<"))


def spelled_passwords(text: str) -> list[str]:
    """Passwords written out in a file: URL user:pass@, password keys with a literal value, SQL
    PASSWORD '...', and (YAML) env entries named *PASSWORD* with a literal ``value``."""
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        found += [f"line {lineno}: URL password {m!r}" for m in URL_PASSWORD.findall(line) if not _is_reference(m)]
        for key, _, value in KEY_PASSWORD.findall(line):
            if value and not _is_reference(value) and not value.startswith(("(", "[")):
                found.append(f"line {lineno}: {key} = {value!r}")
        found += [f"line {lineno}: SQL PASSWORD {m!r}" for m in SQL_PASSWORD.findall(line) if m]
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        docs = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            name, value = node.get("name"), node.get("value")
            if isinstance(name, str) and PASSWORD_KEY.search(name) and isinstance(value, (str, int)) \
                    and not _is_reference(str(value)):
                found.append(f"env {name} = {value!r}")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for doc in docs:
        walk(doc)
    return found


def _target_name(node: ast.AST) -> str | None:
    """The name an assignment target stands for: ``x``, ``obj.x``, ``mapping["x"]``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value
    return None


def spelled_passwords_in_python(text: str) -> list[str]:
    """Passwords written out in Python source: a non-empty string literal assigned to a name, attribute, key or
    keyword argument that names a password; and, inside every string literal (docstrings too), what
    :func:`spelled_passwords` finds in text. Code that reads a password (``password = os.environ[...]``) is fine."""
    found = []
    for node in ast.walk(ast.parse(text)):
        pairs: list[tuple[str | None, ast.AST | None]] = []
        if isinstance(node, ast.Assign):
            pairs += [(_target_name(t), node.value) for t in node.targets]
        elif isinstance(node, ast.AnnAssign):
            pairs.append((_target_name(node.target), node.value))
        elif isinstance(node, ast.keyword):
            pairs.append((node.arg, node.value))
        elif isinstance(node, ast.Dict):
            pairs += [(k.value if isinstance(k, ast.Constant) and isinstance(k.value, str) else None, v)
                      for k, v in zip(node.keys, node.values)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [f"the string at line {node.lineno}, {hit}" for hit in spelled_passwords(node.value)]
        for name, value in pairs:
            if name and PASSWORD_KEY.search(name) and isinstance(value, ast.Constant) \
                    and isinstance(value.value, str) and not _is_reference(value.value):
                found.append(f"line {value.lineno}: {name} = {value.value!r}")
    return found


def spelled_passwords_in_file(path: Path) -> list[str]:
    text = path.read_text()
    if path.suffix == ".md":
        return spelled_passwords(markdown_code(text))
    if path.suffix == ".py":
        return spelled_passwords_in_python(text)
    return spelled_passwords(text)


@pytest.mark.parametrize("text", [
    'password = "hunter2"',
    'client.create_user("sweeps-worker", password="hunter2")',
    'env = {"MLFLOW_TRACKING_PASSWORD": "hunter2"}',
    'os.environ["PGPASSWORD"] = "hunter2"',
    'URL = "postgresql+psycopg2://sweeps:hunter2@db/optuna"',
    '"""Run it as: MLFLOW_TRACKING_PASSWORD=hunter2 python add_user.py"""',
    'admin_password: str = "hunter2"',
])
def test_the_python_password_check_finds_a_spelled_password(text):
    assert spelled_passwords_in_python(text)


@pytest.mark.parametrize("text", [
    'password = os.environ["SWEEPS_MLFLOW_USER_PASSWORD"]',
    'MIN_PASSWORD = 12',
    'client.create_user(user, password)',
    'env = {"MLFLOW_TRACKING_PASSWORD": os.environ.get("X", "")}',
    '"""MLFLOW_TRACKING_PASSWORD=<the admin\'s> python add_user.py"""',
    'message = f"{name} is shorter than 12 characters: MLFLOW_TRACKING_PASSWORD / SWEEPS_MLFLOW_USER_PASSWORD"',
    'admin_password: str = field(default_factory=lambda: secrets.token_hex(16))',
])
def test_the_python_password_check_accepts_code_that_reads_a_password(text):
    assert spelled_passwords_in_python(text) == []


@pytest.mark.parametrize("text", [
    "POSTGRES_PASSWORD: sweeps",
    "url: postgresql+psycopg2://sweeps:hunter2@pgbouncer:6432/optuna",
    "env:\n  - name: POSTGRES_PASSWORD\n    value: hunter2",
    "optuna = host=postgres dbname=optuna password=hunter2",
    "CREATE ROLE sweeps LOGIN PASSWORD 'hunter2';",
    "kubectl create secret generic sweeps-db --from-literal=password=hunter2",
    '{"password": "hunter2"}',
])
def test_the_password_check_finds_a_spelled_password(text):
    assert spelled_passwords(text)


@pytest.mark.parametrize("text", [
    "url: postgresql+psycopg2://sweeps:$(SWEEPS_DB_PASSWORD)@pgbouncer:6432/optuna",
    "url: postgresql+psycopg2://sweeps@pgbouncer:6432/optuna",
    "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it in .env}",
    "env:\n  - name: PGPASSWORD\n    valueFrom:\n      secretKeyRef: {name: sweeps-db, key: password}",
    'kubectl create secret generic sweeps-db --from-literal=password="$(openssl rand -hex 24)"',
    'printf \'"%s" "%s"\\n\' "$SWEEPS_DB_USER" "$SWEEPS_DB_PASSWORD" > userlist.txt',
    "printf 'MLFLOW_TRACKING_PASSWORD=%s\\n' \"$pw\" >> ~/sweeps.env",
    "MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=<the admin's> python add_user.py",
])
def test_the_password_check_accepts_references(text):
    assert spelled_passwords(text) == []


def markdown_code(text: str) -> str:
    """The code of a Markdown file (fenced blocks and `inline` spans), one span a line: its prose may
    say "password: ..." without spelling one."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return "\n".join(fenced + re.findall(r"`([^`\n]+)`", prose))


def test_markdown_code_keeps_commands_and_drops_prose():
    text = "The password: below.\n\n```bash\nexport PGPASSWORD=hunter2\n```\nor `--password=x` inline.\n"
    assert markdown_code(text) == "export PGPASSWORD=hunter2\n\n--password=x"
    assert len(spelled_passwords(markdown_code(text))) == 2


def test_no_password_is_spelled_under_deploy():
    files = [p for p in (REPO / "deploy").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert len(files) >= 10
    assert {p.relative_to(REPO).as_posix() for p in files} >= {"deploy/mlflow/basic_auth.ini", "deploy/mlflow/add_user.py",
                                                              "deploy/kubernetes/mlflow-users-job.yaml"}
    found = {str(p.relative_to(REPO)): spelled_passwords_in_file(p) for p in files}
    assert {k: v for k, v in found.items() if v} == {}


@pytest.mark.parametrize("name", ["docker-compose.yml", ".env.example", "Dockerfile", ".dockerignore"])
def test_no_password_is_spelled_in_the_compose_recipe(name):
    assert spelled_passwords_in_file(REPO / name) == []


def test_env_example_sets_nothing():
    """.env.example names the variables; every value stays empty (a value there would be a shared password)."""
    for line in (REPO / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name) and value == "", line
