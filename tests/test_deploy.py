"""deploy/ on paper and checked: the compose file by docker-compose itself and the compose
spec, the Helm values' Kubernetes objects by the Kubernetes client's models and their run
launcher by dagster-k8s's config schema (the chart itself, with its schema, by `helm` where it is
installed), the instance yaml of every mode by Dagster's, and the image's entrypoint run
for real on this machine (no Docker daemon here: the image itself is not built)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import jsonschema
import kubernetes
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._grpc.client import DagsterGrpcClient
from dagster._serdes import deserialize_value
from dagster_k8s import K8sRunLauncher
from processes import Stack, free_port, http_json, location_loaded, running
from requirements import missing, require_tool
from service_testing import RABBITMQ_URL, require_rabbitmq, unique_queue

from tol_dagster.cluster_settings import ClusterSettings
from tol_dagster.defs.executors import chosen_executor
from tol_dagster.defs.instance import render_instance_yaml
from tol_dagster.defs.resources import LITERALS
from tol_dagster.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
#: The compose spec as Debian's docker-compose ships it (the schema its `config` applies).
COMPOSE_SPEC = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
#: Passwords compose refuses to start without; these stand in for the user's.
COMPOSE_SECRETS = {"TOL_PG_PASSWORD": "pg-secret", "TOL_RABBITMQ_PASSWORD": "mq-secret"}
TOL_SERVICES = {"code-server", "webserver", "daemon", "worker-1", "worker-2"}


def venv_env(**extra: str) -> dict[str, str]:
    """This interpreter's environment with its venv first on PATH, as the image has it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOL_", "DAGSTER_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --- the image ----------------------------------------------------------------------------


def test_dockerfile_copies_files_that_exist_and_reach_the_build() -> None:
    """No Docker daemon here to build it: every COPY source must exist, be sent by the build
    context's ignore file (deploy/Dockerfile.dockerignore), and the entrypoint be executable."""
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    sources = [p for line in lines if line.startswith("COPY ") for p in line.split()[1:-1]]
    sent = {
        line.removeprefix("!").rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert source.rstrip("/") in sent, f"{source} is not sent to the build"
    assert os.access(ENTRYPOINT, os.X_OK)
    assert 'ENTRYPOINT ["/opt/tol-dagster/deploy/entrypoint.sh"]' in lines


# --- compose -------------------------------------------------------------------------------


def compose_config(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    tool = require_tool("docker-compose", "apt-get install docker-compose (.ci/run does)")
    return subprocess.run(
        [tool, "-f", str(DEPLOY / "compose.yaml"), "config"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_is_valid_for_docker_compose() -> None:
    done = compose_config(COMPOSE_SECRETS)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert set(services) == {"postgres", "rabbitmq", *TOL_SERVICES}
    for name in TOL_SERVICES:
        service = services[name]
        assert "tol_data:/data:rw" in service["volumes"], name
        assert service["environment"]["TOL_EXECUTOR"] == "celery", name
        assert service["command"][0] == name.removesuffix("-1").removesuffix("-2"), name
        conditions = {s: d["condition"] for s, d in service["depends_on"].items()}
        assert conditions["postgres"] == conditions["rabbitmq"] == "service_healthy", name
    for name in ("postgres", "rabbitmq", "code-server", "webserver", "daemon"):
        assert services[name]["healthcheck"]["test"], name


def test_compose_refuses_to_start_without_the_passwords() -> None:
    done = compose_config({})
    assert done.returncode != 0
    assert "TOL_PG_PASSWORD" in done.stderr


def test_compose_environment_reads_as_celery_on_postgres() -> None:
    done = compose_config(COMPOSE_SECRETS)
    assert done.returncode == 0, done.stderr
    environment = yaml.safe_load(done.stdout)["services"]["worker-1"]["environment"]
    settings = Settings.from_env({k: v for k, v in environment.items() if v is not None})
    assert settings.home == Path("/data/tol")
    cluster = settings.cluster
    assert (cluster.executor, cluster.pg_url) == ("celery", environment["TOL_DAGSTER_PG_URL"])
    assert cluster.celery_broker == "amqp://tol:mq-secret@rabbitmq:5672//"
    assert "mq-secret" not in json.dumps(cluster.shown())


def test_compose_file_matches_the_compose_spec() -> None:
    if not COMPOSE_SPEC.exists():
        missing(f"the compose spec ({COMPOSE_SPEC}) comes with Debian's docker-compose")
    schema = json.loads(COMPOSE_SPEC.read_text())
    errors = list(
        jsonschema.Draft7Validator(schema).iter_errors(read_yaml(DEPLOY / "compose.yaml"))
    )
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


# --- Helm values ---------------------------------------------------------------------------


#: The Kubernetes objects the values hand to the chart, by where they sit, and their model in
#: the Kubernetes client (installed with dagster-k8s): the API's own field names and required
#: fields, checked offline. `[]` marks a list of such objects.
K8S_OBJECTS = {
    "volumes[]": "V1Volume",
    "volumeMounts[]": "V1VolumeMount",
    "resources": "V1ResourceRequirements",
    "podSecurityContext": "V1PodSecurityContext",
}


def k8s_errors(value: Any, model: str, path: str) -> Iterator[str]:
    """What the Kubernetes API would refuse in `value` as a `model`: a key it does not know
    (a typo) or a required field missing, by path."""
    kind = getattr(kubernetes.client, model, None)
    if kind is None:  # a primitive or a map of them: nothing to check offline
        return
    fields = {json_name: kind.openapi_types[name] for name, json_name in kind.attribute_map.items()}
    if not isinstance(value, dict):
        yield f"{path}: expected an object ({model})"
        return
    for key, item in value.items():
        if key not in fields:
            yield f"{path}.{key}: not a field of {model}"
            continue
        field_type = fields[key]
        if field_type.startswith("list[") and isinstance(item, list):
            for index, element in enumerate(item):
                yield from k8s_errors(element, field_type[5:-1], f"{path}.{key}[{index}]")
        elif field_type.startswith("V1"):
            yield from k8s_errors(item, field_type, f"{path}.{key}")
    try:
        kubernetes.client.ApiClient()._ApiClient__deserialize(value, model)  # type: ignore[attr-defined]
    except ValueError as exc:
        yield f"{path}: {exc}"


def k8s_objects(values: Mapping[str, Any]) -> Iterator[tuple[str, Any, str]]:
    """(path, object, model) of every Kubernetes object the values set, where the chart
    takes them: the user deployment and the run launcher."""
    holders = {
        "dagster-user-deployments.deployments[0]": values["dagster-user-deployments"][
            "deployments"
        ][0],
        "runLauncher.config.k8sRunLauncher": values["runLauncher"]["config"]["k8sRunLauncher"],
    }
    for holder_path, holder in holders.items():
        for where, model in K8S_OBJECTS.items():
            key = where.removesuffix("[]")
            if key not in holder:
                continue
            items = holder[key] if where.endswith("[]") else [holder[key]]
            for index, item in enumerate(items):
                yield f"{holder_path}.{key}[{index}]", item, model


def helm_values() -> dict[str, Any]:
    return read_yaml(DEPLOY / "helm" / "values.yaml")


def test_helm_values_kubernetes_objects_are_valid_for_the_kubernetes_api() -> None:
    """Volumes, mounts, resources and security contexts, and the claim the runs share, as the
    Kubernetes API reads them (the chart's own schema needs the chart: `helm lint` below)."""
    objects = list(k8s_objects(helm_values()))
    assert {model for _, _, model in objects} == set(K8S_OBJECTS.values())
    errors = [e for path, item, model in objects for e in k8s_errors(item, model, path)]
    claim = read_yaml(DEPLOY / "helm" / "tol-home-pvc.yaml")
    errors += list(k8s_errors(claim, "V1PersistentVolumeClaim", "tol-home-pvc"))
    assert errors == []


def test_helm_values_check_catches_a_typo_and_a_missing_field() -> None:
    values = helm_values()
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher["volumeMounts"][0]["mountpath"] = launcher["volumeMounts"][0].pop("mountPath")
    errors = [e for path, item, model in k8s_objects(values) for e in k8s_errors(item, model, path)]
    assert any("mountpath: not a field of V1VolumeMount" in e for e in errors), errors
    assert any("mount_path" in e and "must not be `None`" in e for e in errors), errors


def test_helm_runs_and_steps_see_tol_home_on_a_read_write_many_claim() -> None:
    values = helm_values()
    pvc = read_yaml(DEPLOY / "helm" / "tol-home-pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert deployment["env"]["TOL_EXECUTOR"] == "k8s"
    home = deployment["env"]["TOL_HOME"]
    for holder in (deployment, launcher):
        (volume,) = holder["volumes"]
        assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        assert holder["volumeMounts"] == [{"name": volume["name"], "mountPath": home}]
        assert holder["resources"]["requests"]
    assert Settings.from_env(deployment["env"]).cluster.executor == "k8s"


def chart_instance(values: Mapping[str, Any]) -> dict[str, Any]:
    """The dagster.yaml the chart renders from `values` (templates/configmap-instance.yaml
    and helpers/instance/*.tpl), for the parts deploy/helm/values.yaml sets."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    daemon = values["dagsterDaemon"]
    queued = {
        "max_concurrent_runs": daemon["runCoordinator"]["config"]["queuedRunCoordinator"].get(
            "maxConcurrentRuns"
        ),
        "tag_concurrency_limits": daemon["runCoordinator"]["config"]["queuedRunCoordinator"].get(
            "tagConcurrencyLimits"
        ),
    }
    monitoring = daemon["runMonitoring"]
    postgres = values["postgresql"]
    postgres_db = {
        "username": postgres["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": postgres["postgresqlHost"],
        "db_name": postgres["postgresqlDatabase"],
        "port": postgres["service"]["port"],
    }
    storage = {"config": {"postgres_db": postgres_db}}
    return {
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage"}
        | storage,
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
        }
        | storage,
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
        }
        | storage,
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": chart_run_launcher_config(launcher),
        },
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
        }
        | ({"config": queued} if any(queued.values()) else {}),
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "cancel_timeout_seconds": monitoring["cancelTimeoutSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
        },
        "run_retries": {"enabled": daemon["runRetries"]["enabled"]},
        "sensors": {
            "use_threads": daemon["sensors"]["useThreads"],
            "num_workers": daemon["sensors"]["numWorkers"],
        },
        "telemetry": values["telemetry"],
        **values["additionalInstanceConfig"],
    }


def chart_run_launcher_config(launcher: Mapping[str, Any]) -> dict[str, Any]:
    """helpers/instance/_run-launcher.tpl's K8sRunLauncher config (`envSecrets: [{name}]` to
    names; the chart's own env, config map and secrets as the variables it sets)."""
    config: dict[str, Any] = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": "dagster",
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": "dagster",
        "dagster_home": {"env": "DAGSTER_HOME"},
        "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
        "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
        "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}]
        + [m["name"] for m in launcher["envConfigMaps"]],
        "env_secrets": [s["name"] for s in launcher["envSecrets"]],
        "volume_mounts": launcher["volumeMounts"],
        "volumes": launcher["volumes"],
    }
    if launcher["envVars"]:
        config["env_vars"] = launcher["envVars"]
    return config


#: What the chart sets in the pods for the run launcher's `env:` references.
CHART_ENV = {
    "DAGSTER_HOME": "/opt/dagster/dagster_home",
    "DAGSTER_K8S_INSTANCE_CONFIG_MAP": "dagster-instance",
    "DAGSTER_K8S_PG_PASSWORD_SECRET": "dagster-postgresql-secret",
    "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP": "dagster-pipeline-env",
}


def test_helm_run_launcher_config_is_valid_for_dagster_k8s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in CHART_ENV.items():
        monkeypatch.setenv(name, value)
    launcher = helm_values()["runLauncher"]["config"]["k8sRunLauncher"]
    config = chart_run_launcher_config(launcher) | {"resources": launcher["resources"]}
    result = process_config(dg.Shape(K8sRunLauncher.config_type()), config)
    assert result.success, [e.message for e in result.errors or []]
    bad = process_config(dg.Shape(K8sRunLauncher.config_type()), config | {"volume": []})
    assert not bad.success


def test_helm_instance_is_valid_for_dagster(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(chart_instance(helm_values())))
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["concurrency"]["pools"] == {"granularity": "run", "default_limit": 1}


# --- the instance yaml of each mode ---------------------------------------------------------

MODES = {
    "embedded": {},
    "multiprocess": {"TOL_EXECUTOR": "multiprocess", "TOL_WORKERS": "2"},
    "celery": {
        "TOL_EXECUTOR": "celery",
        "TOL_DAGSTER_PG_URL": "postgresql://dagster:s3cret@postgres:5432/dagster",
        "TOL_CELERY_BROKER": "amqp://tol:s3cret@rabbitmq:5672//",
    },
    "k8s": {
        "TOL_EXECUTOR": "k8s",
        "TOL_WORKERS": "8",
        "TOL_DAGSTER_PG_URL": "postgresql://dagster@pg:5432/dagster",
    },
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_instance_yaml_of_each_mode_is_valid_for_dagster(mode: str, tmp_path: Path) -> None:
    cluster = ClusterSettings.from_env(MODES[mode])
    text = render_instance_yaml(cluster)
    assert "s3cret" not in text
    (tmp_path / "dagster.yaml").write_text(text)
    config, _ = dagster_instance_config(str(tmp_path))
    if cluster.pg_url:
        assert config["storage"] == {"postgres": {"postgres_url": {"env": "TOL_DAGSTER_PG_URL"}}}
    else:
        assert "storage" not in config
    assert config["concurrency"]["pools"]["granularity"] == "run"


@pytest.mark.parametrize("mode", ["multiprocess", "celery", "k8s"])
def test_executor_of_each_mode_is_valid_for_its_integration(mode: str) -> None:
    """The executor config `TOL_EXECUTOR` gives passes the executor's own config schema
    (dagster-k8s's k8s_job_executor, dagster-celery's celery_executor, Dagster's)."""
    cluster = ClusterSettings.from_env(MODES[mode])
    executor = chosen_executor(cluster, LITERALS)
    assert executor.name == mode
    resolved = executor.config_schema.resolve_config({})  # type: ignore[union-attr]
    assert resolved.success, [e.message for e in resolved.errors or []]
    if mode == "k8s":
        assert resolved.value["config"]["max_concurrent"] == cluster.workers


# --- the entrypoint, run for real -----------------------------------------------------------


def entrypoint(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENTRYPOINT), *args], env=dict(env), capture_output=True, text=True, timeout=60
    )


def test_entrypoint_refuses_an_unknown_role_naming_the_roles(tmp_path: Path) -> None:
    done = entrypoint("scheduler", env=venv_env(TOL_HOME=str(tmp_path)))
    assert done.returncode == 2
    assert "unknown role 'scheduler'" in done.stderr
    assert "code-server, webserver, daemon, worker" in done.stderr
    assert not (tmp_path / "dagster").exists()
    assert entrypoint(env=venv_env()).returncode == 2


def test_entrypoint_refuses_a_bad_setting_before_starting_anything(tmp_path: Path) -> None:
    done = entrypoint("daemon", env=venv_env(TOL_HOME=str(tmp_path), TOL_EXECUTOR="spark"))
    assert done.returncode == 2
    assert "TOL_EXECUTOR='spark'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    yield from running(tmp_path / "logs", budget_s=90)


@pytest.mark.e2e
def test_entrypoint_roles_serve_the_code_location_to_the_webserver_and_daemon(
    stack: Stack, tmp_path: Path
) -> None:
    """code-server, webserver and daemon as compose runs them (its workspace.yaml, one
    DAGSTER_HOME), on this machine: the code server answers gRPC, the webserver loads the code
    location from it, and the daemon heartbeats into the instance the webserver reads."""
    grpc_port, web_port = free_port(), free_port()
    env = venv_env(
        TOL_HOME=str(tmp_path / "home"),
        TOL_CODE_SERVER_HOST="127.0.0.1",
        TOL_CODE_SERVER_PORT=str(grpc_port),
    )
    stack.start("code-server", [str(ENTRYPOINT), "code-server", "-h", "127.0.0.1"], env)
    client = DagsterGrpcClient(port=grpc_port, host="127.0.0.1")
    assert stack.wait_for("the code server's gRPC ping", lambda: ping(client)) == "tol"
    names = stack.wait_for("the code location's repositories", lambda: repositories(client))
    assert names == ["__repository__"]
    web = [str(ENTRYPOINT), "webserver", "-h", "127.0.0.1", "-p", str(web_port)]
    stack.start("webserver", web, env)
    stack.start("daemon", [str(ENTRYPOINT), "daemon"], env)
    graphql = f"http://127.0.0.1:{web_port}/graphql"
    assert stack.wait_for("the webserver's code location", lambda: location_loaded(stack, graphql))
    healthy = stack.wait_for("the daemon's heartbeats", lambda: daemons_healthy(graphql))
    assert {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR"} <= healthy
    yaml_path = tmp_path / "home" / "dagster" / "dagster.yaml"
    assert yaml_path.read_text() == render_instance_yaml(ClusterSettings())


DAEMON_HEALTH = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"


def daemons_healthy(graphql: str) -> set[str] | None:
    """The daemons the webserver sees as healthy, once the scheduler is among them."""
    try:
        answer = http_json(graphql, {"query": DAEMON_HEALTH})
    except (urllib.error.URLError, ConnectionError):
        return None
    statuses = answer["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
    healthy = {s["daemonType"] for s in statuses if s["healthy"]}
    return healthy if "SCHEDULER" in healthy else None


def ping(client: DagsterGrpcClient) -> str | None:
    try:
        return str(client.ping("tol")["echo"])
    except Exception:
        return None


def repositories(client: DagsterGrpcClient) -> list[str] | None:
    """The repositories the code server loaded (None while it cannot answer yet)."""
    try:
        response: Any = deserialize_value(client.list_repositories())
    except Exception:
        return None
    return [symbol.repository_name for symbol in response.repository_symbols]


@pytest.mark.e2e
def test_entrypoint_worker_serves_the_queue_and_stops_on_sigterm(
    stack: Stack, tmp_path: Path
) -> None:
    require_rabbitmq()
    queue = unique_queue()
    env = venv_env(
        TOL_HOME=str(tmp_path / "home"),
        TOL_EXECUTOR="celery",
        TOL_CELERY_BROKER=RABBITMQ_URL,
        TOL_CELERY_QUEUE=queue,
    )
    worker = stack.start("worker", [str(ENTRYPOINT), "worker", "--concurrency", "1"], env)
    log = stack.logs / "worker.log"
    stack.wait_for("the worker's ready line", lambda: "ready" in log.read_text() or None)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, stack.tails()
    assert queue in log.read_text()
