"""Static checks for the production deployment files in infra/deploy/.

PRODUCTION PATH helper: the files it checks cannot run in the development sandbox (no Docker, no GPU, no
cluster), so this only proves what can be proved without them: every file parses, the pieces reference each
other consistently (service names, ports, mounts, data source uid), the dashboard has a data source uid and a
PromQL expression on every panel, and every RAGSTREAM_* variable is a field of infra/settings.py.

Standard library only; PyYAML is imported lazily. Without it the YAML checks are skipped and reported as
skipped (``--require-yaml`` turns that into a failure).

    python infra/deploy/validate.py [--require-yaml]

From a test::

    spec = importlib.util.spec_from_file_location("deploy_validate", "infra/deploy/validate.py")
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    report = module.validate()
    assert report.ok, report.errors
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

DEPLOY_DIR = Path(__file__).resolve().parent
DATASOURCE_UID = "ragstream-prometheus"
MIN_SCHEMA_VERSION = 39

# Files that must say, near the top, that they are the production path and not runnable in the sandbox.
HEADER_FILES = (
    "compose.yaml",
    "Dockerfile",
    "otel-collector.yaml",
    "prometheus.yml",
    "grafana/provisioning/datasources/prometheus.yaml",
    "grafana/provisioning/dashboards/dashboards.yaml",
    "k8s/ragstream.yaml",
    "README.md",
)
HEADER_MARKERS = ("PRODUCTION PATH", "development sandbox")
HEADER_LINES = 15

REQUIRED_SERVICES = (
    "kafka",
    "milvus-etcd",
    "milvus-minio",
    "milvus",
    "redis",
    "triton",
    "otel-collector",
    "prometheus",
    "grafana",
    "ragstream-worker",
    "ragstream-bridge",
)
# Services whose image cannot probe itself; the named sidecar carries the healthcheck instead.
PROBED_BY_SIDECAR = {"otel-collector": "otel-collector-health"}
APP_ENV = (
    "RAGSTREAM_KAFKA_BOOTSTRAP",
    "RAGSTREAM_REDIS_URL",
    "RAGSTREAM_MILVUS_URI",
    "RAGSTREAM_TRITON_GRPC_URL",
    "RAGSTREAM_OTLP_ENDPOINT",
)
ENV_PREFIX = "RAGSTREAM_"

# Metrics the dashboards may query that come from another exporter, by name prefix (the rest must be emitted by
# ragstream's own code, which is read for them: see ``code_metrics``).
EXTERNAL_METRIC_PREFIXES = {"nv_": "Triton's metrics endpoint (--metrics-port)"}
# Code that declares OpenTelemetry instruments, relative to the repository root.
INSTRUMENTED_PACKAGES = ("streams", "processors")
_INSTRUMENT_KINDS = {
    "create_counter": "counter",
    "create_observable_counter": "counter",
    "create_up_down_counter": "gauge",
    "create_observable_up_down_counter": "gauge",
    "create_gauge": "gauge",
    "create_observable_gauge": "gauge",
    "create_histogram": "histogram",
}
# A unit adds this suffix to the Prometheus name (opentelemetry-exporter-prometheus, the collector): instruments
# carry it in their own name already, so the name in code is the name on the dashboard.
_UNIT_SUFFIXES = {"s": "_seconds", "ms": "_milliseconds", "By": "_bytes"}
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "inf", "nan", "atan2",
}  # fmt: skip


class Report:
    """What ``validate`` found. A plain class (not a dataclass) so the module also works when loaded from its
    file path with importlib without being registered in ``sys.modules``."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.skipped: list[str] = []
        self.checked: list[str] = []

    @property
    def ok(self) -> bool:
        return not self.errors

    def check(self, condition: bool, message: str) -> bool:
        if not condition:
            self.errors.append(message)
        return condition


# ------------------------------------------------------------------------------------------------ helpers
def _load_yaml_module() -> Any:
    try:
        return importlib.import_module("yaml")
    except ImportError:
        return None


def _as_map(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _as_list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _env_names(environment: object) -> set[str]:
    """Names from a compose ``environment`` block (mapping or ``KEY=value`` list)."""
    if isinstance(environment, Mapping):
        return {str(key) for key in environment}
    return {str(item).split("=", 1)[0] for item in _as_list(environment)}


def _port_of(address: str) -> str:
    return address.rsplit(":", 1)[-1]


def settings_fields(repo_root: Path) -> set[str] | None:
    """Field names of ``infra.settings.Settings``, read with ``ast`` so nothing is imported."""
    path = repo_root / "infra" / "settings.py"
    if not path.is_file():
        return None
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Settings":
            return {
                stmt.target.id
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            }
    return None


def _check_env_against_settings(report: Report, names: Iterable[str], fields: set[str] | None, where: str) -> None:
    if fields is None:
        return
    for name in sorted(names):
        if name.startswith(ENV_PREFIX):
            key = name[len(ENV_PREFIX) :].lower()
            report.check(key in fields, f"{where}: {name} is not a Settings field (infra/settings.py)")


# ------------------------------------------------------------------------------------- text-only checks
def check_headers(report: Report, deploy_dir: Path) -> None:
    for rel in HEADER_FILES:
        path = deploy_dir / rel
        if not report.check(path.is_file(), f"missing file: {rel}"):
            continue
        head = "\n".join(path.read_text(encoding="utf-8").splitlines()[:HEADER_LINES])
        for marker in HEADER_MARKERS:
            report.check(marker in head, f"{rel}: header does not mention {marker!r}")
    report.checked.append("file headers")


def check_dockerfile(report: Report, deploy_dir: Path) -> None:
    path = deploy_dir / "Dockerfile"
    if not path.is_file():
        return
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    froms = [line.split()[1] for line in lines if line.upper().startswith("FROM ")]
    report.check(
        bool(froms) and all(image == "python:3.11-slim" for image in froms),
        f"Dockerfile: every stage must be FROM python:3.11-slim, found {froms}",
    )
    entrypoints = [line[len("ENTRYPOINT") :].strip() for line in lines if line.upper().startswith("ENTRYPOINT")]
    parsed: object = None
    if entrypoints:
        try:
            parsed = json.loads(entrypoints[-1])
        except json.JSONDecodeError:
            parsed = None
    report.check(parsed == ["ragstream"], 'Dockerfile: final ENTRYPOINT must be ["ragstream"]')
    report.check(
        any("pip wheel" in line or "pip install" in line for line in lines),
        "Dockerfile: does not pip install the project",
    )
    report.checked.append("Dockerfile")


def dashboard_files(deploy_dir: Path = DEPLOY_DIR) -> list[Path]:
    return sorted((deploy_dir / "grafana" / "dashboards").glob("*.json"))


def dashboard_panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every panel, with the panels of collapsed rows in place of the row."""
    flat: list[dict[str, Any]] = []
    for panel in map(_as_map, _as_list(dashboard.get("panels"))):
        if panel.get("type") == "row":
            flat.extend(map(_as_map, _as_list(panel.get("panels"))))
        else:
            flat.append(panel)
    return flat


def dashboard_expressions(path: Path) -> list[tuple[str, str, str]]:
    """``(panel title, refId, PromQL)`` of every panel target of one dashboard file."""
    dashboard = _as_map(json.loads(path.read_text(encoding="utf-8")))
    return [
        (str(panel.get("title")), str(target.get("refId")), str(target.get("expr")).strip())
        for panel in dashboard_panels(dashboard)
        for target in map(_as_map, _as_list(panel.get("targets")))
        if isinstance(target.get("expr"), str) and target.get("expr", "").strip()
    ]


def expression_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (labels, strings, ranges, functions and keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if not call and name.lower() not in _PROMQL_WORDS:
            names.add(name)
    return names


def code_metrics(repo_root: Path) -> dict[str, str]:
    """Prometheus series name -> where the code declares the instrument, for every OpenTelemetry instrument created
    with a literal name in INSTRUMENTED_PACKAGES: counters as ``name_total``, histograms as ``name_bucket``,
    ``name_sum`` and ``name_count``, gauges as ``name``. Read with ``ast``, so nothing is imported."""
    found: dict[str, str] = {}
    for package in INSTRUMENTED_PACKAGES:
        for source in sorted((repo_root / package).rglob("*.py")):
            tree = ast.parse(source.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                kind = _INSTRUMENT_KINDS.get(node.func.attr)
                if kind is None or not node.args or not isinstance(node.args[0], ast.Constant):
                    continue
                name = str(node.args[0].value)
                where = f"{source.relative_to(repo_root)}:{node.lineno}"
                series = {"counter": [f"{name}_total"], "gauge": [name]}.get(
                    kind, [f"{name}_bucket", f"{name}_sum", f"{name}_count"]
                )
                found.update(dict.fromkeys(series, where))
                unit = next((kw.value for kw in node.keywords if kw.arg == "unit"), None)
                unit_text = str(unit.value) if isinstance(unit, ast.Constant) else ""
                suffix = "_per_second" if unit_text.endswith("/s") else _UNIT_SUFFIXES.get(unit_text, "")
                if suffix and not name.endswith(suffix):
                    found[f"!{name}"] = f"{where}: unit {unit_text!r} needs the name to end in {suffix}"
    return found


def _check_metric_names(report: Report, dashboard: str, exprs: Iterable[str], emitted: Mapping[str, str]) -> None:
    """Every metric a panel queries is emitted by the code (or by a known exporter), and every instrument of the
    code is on some panel."""
    for key, problem in emitted.items():
        if key.startswith("!"):
            report.errors.append(f"instrument {key[1:]} at {problem}")
    queried: set[str] = set()
    for expr in exprs:
        for name in sorted(expression_metrics(expr)):
            queried.add(name)
            external = any(name.startswith(prefix) for prefix in EXTERNAL_METRIC_PREFIXES)
            report.check(
                external or name in emitted,
                f"{dashboard}: {name} is queried but no code emits it (instruments: {INSTRUMENTED_PACKAGES})",
            )
    instruments = {re.sub(r"_(total|bucket|sum|count)$", "", name): name for name in emitted if name[0] != "!"}
    for base, where in sorted(instruments.items()):
        variants = {base, f"{base}_total", f"{base}_bucket", f"{base}_sum", f"{base}_count"}
        report.check(bool(variants & queried), f"{dashboard}: no panel shows {base} ({emitted[where]})")


def check_dashboards(report: Report, deploy_dir: Path) -> None:
    report.check(
        (deploy_dir / "grafana" / "dashboards" / "ragstream.json").is_file(),
        "missing file: grafana/dashboards/ragstream.json",
    )
    emitted = code_metrics(deploy_dir.parent.parent)
    for path in dashboard_files(deploy_dir):
        check_dashboard(report, path, emitted)


def check_dashboard(report: Report, path: Path, emitted: Mapping[str, str]) -> None:
    try:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        report.errors.append(f"{path.name}: invalid JSON: {exc}")
        return
    report.check(isinstance(dashboard, dict), f"{path.name}: top level is not an object")
    dashboard = _as_map(dashboard)
    schema = dashboard.get("schemaVersion")
    report.check(
        isinstance(schema, int) and schema >= MIN_SCHEMA_VERSION,
        f"{path.name}: schemaVersion {schema!r} < {MIN_SCHEMA_VERSION}",
    )
    report.check(bool(dashboard.get("uid")), f"{path.name}: dashboard uid missing")
    description = str(dashboard.get("description", ""))
    for marker in HEADER_MARKERS:
        report.check(marker in description, f"{path.name}: description does not mention {marker!r}")

    flat = dashboard_panels(dashboard)  # rows may nest panels when collapsed: check what they hold
    report.check(bool(flat), f"{path.name}: no panels")
    ids = [panel.get("id") for panel in flat]
    report.check(len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids")

    exprs: list[str] = []
    for panel in flat:
        name = f"{path.name} panel {panel.get('id')} {panel.get('title')!r}"
        datasource = _as_map(panel.get("datasource"))
        report.check(
            datasource.get("uid") == DATASOURCE_UID and datasource.get("type") == "prometheus",
            f"{name}: datasource must be prometheus uid {DATASOURCE_UID!r}, got {datasource}",
        )
        report.check(isinstance(panel.get("gridPos"), dict), f"{name}: gridPos missing")
        targets = [_as_map(target) for target in _as_list(panel.get("targets"))]
        report.check(bool(targets), f"{name}: no targets")
        ref_ids = [target.get("refId") for target in targets]
        report.check(len(ref_ids) == len(set(ref_ids)), f"{name}: duplicate refId")
        for target in targets:
            raw_expr = target.get("expr")
            expr = raw_expr.strip() if isinstance(raw_expr, str) else ""
            if report.check(expr != "", f"{name}: target {target.get('refId')} has no expr"):
                exprs.append(expr)
                report.check(expr.count("(") == expr.count(")"), f"{name}: unbalanced parentheses in {expr!r}")
            target_ds = target.get("datasource")
            if target_ds is not None:
                report.check(
                    _as_map(target_ds).get("uid") == DATASOURCE_UID,
                    f"{name}: target {target.get('refId')} datasource uid differs from the panel's",
                )

    for variable in map(_as_map, _as_list(_as_map(dashboard.get("templating")).get("list"))):
        if variable.get("type") == "query":
            report.check(
                _as_map(variable.get("datasource")).get("uid") == DATASOURCE_UID,
                f"{path.name}: variable {variable.get('name')!r} has the wrong datasource uid",
            )

    _check_metric_names(report, path.name, exprs, emitted)
    report.checked.append(f"dashboard {path.name} ({len(flat)} panels)")


# ------------------------------------------------------------------------------------------- YAML checks
def _read_yaml(report: Report, yaml: Any, deploy_dir: Path, rel: str) -> dict[str, Any] | None:
    path = deploy_dir / rel
    if not report.check(path.is_file(), f"missing file: {rel}"):
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        report.errors.append(f"{rel}: invalid YAML: {exc}")
        return None
    if not report.check(isinstance(data, dict), f"{rel}: top level is not a mapping"):
        return None
    return _as_map(data)


def _has_healthcheck(service: Mapping[str, Any]) -> bool:
    healthcheck = _as_map(service.get("healthcheck"))
    return bool(healthcheck.get("test")) and not healthcheck.get("disable", False)


# Every SCRAM user the ACLs of infra/kafka_security.py name (ROLES), plus the admin that creates them.
KAFKA_USERS = ("admin", "bridge", "worker", "ingest", "operator", "monitor")


def check_kafka_security(report: Report, services: Mapping[str, Mapping[str, Any]]) -> None:
    """Kafka authenticates every listener and enforces ACLs; every ragstream service logs in as its own user."""
    env = _as_map(services.get("kafka", {}).get("environment"))
    protocols = [item.split(":", 1)[-1] for item in str(env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "")).split(",")]
    report.check(
        bool(protocols) and all(p.startswith("SASL_") for p in protocols),
        f"compose.yaml: every Kafka listener must use SASL (listener map has {protocols})",
    )
    report.check(
        str(env.get("KAFKA_AUTHORIZER_CLASS_NAME", "")).endswith("StandardAuthorizer")
        and str(env.get("KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND", "")).lower() == "false",
        "compose.yaml: kafka must enforce ACLs (StandardAuthorizer, allow.everyone.if.no.acl.found=false)",
    )
    formatting = " ".join(map(str, _as_list(services.get("kafka-format", {}).get("command"))))
    for user in KAFKA_USERS:
        report.check(f"scram {user} " in formatting, f"compose.yaml: kafka-format creates no SCRAM user {user!r}")
    for name, service in services.items():
        app_env = _as_map(service.get("environment"))
        if "RAGSTREAM_KAFKA_BOOTSTRAP" not in app_env:
            continue
        report.check(
            str(app_env.get("RAGSTREAM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")).startswith("SASL_")
            and bool(app_env.get("RAGSTREAM_KAFKA_USERNAME"))
            and bool(app_env.get("RAGSTREAM_KAFKA_PASSWORD")),
            f"compose.yaml service {name!r}: must log in to Kafka (SASL protocol, username, password)",
        )


def _one_shot_services(services: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Services that run once to completion (``restart: "no"``) and that another service waits for with
    ``condition: service_completed_successfully`` (e.g. formatting Kafka's storage, creating topics and ACLs)."""
    awaited: set[str] = set()
    for service in services.values():
        depends = service.get("depends_on")
        if isinstance(depends, Mapping):
            awaited.update(
                str(dep)
                for dep, spec in depends.items()
                if _as_map(spec).get("condition") == "service_completed_successfully"
            )
    return {name for name in awaited if str(_as_map(services.get(name)).get("restart", "no")) == "no"}


def check_compose(
    report: Report, compose: dict[str, Any], deploy_dir: Path, fields: set[str] | None
) -> dict[str, dict[str, Any]]:
    services = {str(name): _as_map(spec) for name, spec in _as_map(compose.get("services")).items()}
    for name in REQUIRED_SERVICES:
        report.check(name in services, f"compose.yaml: service {name!r} missing")
    declared_volumes = set(_as_map(compose.get("volumes")))

    one_shot = _one_shot_services(services)
    for name, service in services.items():
        where = f"compose.yaml service {name!r}"
        sidecar = PROBED_BY_SIDECAR.get(name)
        if name in one_shot:
            pass  # a job that runs to completion: others wait for its exit code, not for a healthcheck
        elif sidecar is not None and not _has_healthcheck(service):
            report.check(
                _has_healthcheck(services.get(sidecar, {})),
                f"{where}: no healthcheck and its sidecar {sidecar!r} has none either",
            )
        else:
            report.check(_has_healthcheck(service), f"{where}: no healthcheck")
        report.check(bool(service.get("image") or service.get("build")), f"{where}: neither image nor build")

        depends = service.get("depends_on")
        dep_map = _as_map(depends) if isinstance(depends, Mapping) else {str(d): {} for d in _as_list(depends)}
        for dep, spec in dep_map.items():
            if not report.check(dep in services, f"{where}: depends_on unknown service {dep!r}"):
                continue
            if _as_map(spec).get("condition") == "service_completed_successfully":
                report.check(
                    str(services[dep].get("restart", "no")) == "no",
                    f'{where}: waits for {dep!r} to complete, but {dep!r} restarts (set restart: "no")',
                )
            if _as_map(spec).get("condition") == "service_healthy":
                report.check(
                    _has_healthcheck(services[dep]),
                    f"{where}: waits for {dep!r} to be healthy but {dep!r} has no healthcheck",
                )

        for volume in _as_list(service.get("volumes")):
            source = str(volume).split(":", 1)[0] if isinstance(volume, str) else str(_as_map(volume).get("source"))
            if source.startswith((".", "/")):
                local = (deploy_dir / source).resolve()
                if "triton_models" in source:
                    if not local.exists():
                        report.skipped.append(f"compose.yaml: {source} does not exist yet (needed at deploy time)")
                else:
                    report.check(local.exists(), f"{where}: bind-mount source {source} does not exist")
            else:
                report.check(source in declared_volumes, f"{where}: named volume {source!r} not declared")

        _check_env_against_settings(report, _env_names(service.get("environment")), fields, where)

    kafka = services.get("kafka", {})
    report.check(kafka.get("image") == "apache/kafka:4.1.0", "compose.yaml: kafka must use apache/kafka:4.1.0")
    kafka_env = _as_map(kafka.get("environment"))
    report.check(
        "broker" in str(kafka_env.get("KAFKA_PROCESS_ROLES", ""))
        and "controller" in str(kafka_env.get("KAFKA_PROCESS_ROLES", "")),
        "compose.yaml: kafka must run combined broker,controller (KRaft)",
    )
    check_kafka_security(report, services)
    report.check(
        str(services.get("redis", {}).get("image", "")).startswith("redis:8"),
        "compose.yaml: redis must use a redis:8 image",
    )
    report.check(
        str(services.get("milvus", {}).get("image", "")).startswith("milvusdb/milvus:v2.5."),
        "compose.yaml: milvus must use milvusdb/milvus:v2.5.x",
    )

    triton = services.get("triton", {})
    report.check(
        re.search(
            r"tritonserver:\$\{[^}]*25\.\d\d-trtllm-python-py3\}|tritonserver:25\.\d\d-trtllm-python-py3",
            str(triton.get("image", "")),
        )
        is not None,
        "compose.yaml: triton must use nvcr.io/nvidia/tritonserver:25.xx-trtllm-python-py3",
    )
    devices = _as_list(
        _as_map(_as_map(_as_map(triton.get("deploy")).get("resources")).get("reservations")).get("devices")
    )
    report.check(
        any("gpu" in _as_list(_as_map(d).get("capabilities")) for d in devices),
        "compose.yaml: triton has no GPU reservation",
    )
    report.check(
        any(str(v).startswith("../../triton_models/production:/models") for v in _as_list(triton.get("volumes"))),
        "compose.yaml: triton must mount ../../triton_models/production at /models",
    )
    triton_cmd = " ".join(map(str, _as_list(triton.get("command"))))
    for flag in ("--model-repository=/models", "--http-port 8000", "--grpc-port 8001", "--metrics-port 8002"):
        report.check(flag in triton_cmd, f"compose.yaml: triton command lacks {flag}")

    for name, command in (("ragstream-worker", ["worker"]), ("ragstream-bridge", ["bridge"])):
        service = services.get(name, {})
        report.check(service.get("command") == command, f"compose.yaml: {name} command must be {command}")
        env = _env_names(service.get("environment"))
        for var in APP_ENV:
            report.check(var in env, f"compose.yaml: {name} lacks {var}")
    report.check(
        any(_port_of(str(p)) == "8765" for p in _as_list(services.get("ragstream-bridge", {}).get("ports"))),
        "compose.yaml: ragstream-bridge does not publish 8765",
    )
    report.checked.append(f"compose.yaml ({len(services)} services)")
    return services


def check_otel(report: Report, otel: dict[str, Any], services: Mapping[str, Mapping[str, Any]]) -> str | None:
    protocols = _as_map(_as_map(_as_map(otel.get("receivers")).get("otlp")).get("protocols"))
    report.check(
        str(_as_map(protocols.get("grpc")).get("endpoint", "")).endswith(":4317"),
        "otel-collector.yaml: OTLP gRPC receiver not on :4317",
    )
    report.check(
        str(_as_map(protocols.get("http")).get("endpoint", "")).endswith(":4318"),
        "otel-collector.yaml: OTLP HTTP receiver not on :4318",
    )
    exporters = _as_map(otel.get("exporters"))
    prom_endpoint = str(_as_map(exporters.get("prometheus")).get("endpoint", ""))
    report.check(bool(prom_endpoint), "otel-collector.yaml: prometheus exporter has no endpoint")

    service = _as_map(otel.get("service"))
    defined = {
        "receivers": set(_as_map(otel.get("receivers"))),
        "processors": set(_as_map(otel.get("processors"))),
        "exporters": set(exporters),
    }
    for pipeline_name, pipeline in _as_map(service.get("pipelines")).items():
        for kind, names in defined.items():
            for component in _as_list(_as_map(pipeline).get(kind)):
                report.check(
                    component in names,
                    f"otel-collector.yaml: pipeline {pipeline_name} uses undefined {kind[:-1]} {component!r}",
                )
    extensions = _as_map(otel.get("extensions"))
    for ext in _as_list(service.get("extensions")):
        report.check(ext in extensions, f"otel-collector.yaml: service uses undefined extension {ext!r}")
    health_port = _port_of(str(_as_map(extensions.get("health_check")).get("endpoint", "")))
    sidecar = services.get(PROBED_BY_SIDECAR["otel-collector"], {})
    probe = " ".join(map(str, _as_list(_as_map(sidecar.get("healthcheck")).get("test"))))
    report.check(
        f"otel-collector:{health_port}" in probe,
        f"otel-collector.yaml: health_check port {health_port} is not what the sidecar probes",
    )
    report.checked.append("otel-collector.yaml")
    return _port_of(prom_endpoint) if prom_endpoint else None


def check_prometheus(
    report: Report, prom: dict[str, Any], services: Mapping[str, Any], collector_port: str | None
) -> None:
    jobs = {str(_as_map(job).get("job_name")): _as_map(job) for job in _as_list(prom.get("scrape_configs"))}
    targets: set[str] = set()
    for name, job in jobs.items():
        for static in map(_as_map, _as_list(job.get("static_configs"))):
            for target in _as_list(static.get("targets")):
                targets.add(str(target))
                host = str(target).rsplit(":", 1)[0]
                report.check(
                    host == "localhost" or host in services,
                    f"prometheus.yml job {name}: target host {host!r} is not a compose service",
                )
        for dns in map(_as_map, _as_list(job.get("dns_sd_configs"))):
            for host in _as_list(dns.get("names")):
                report.check(host in services, f"prometheus.yml job {name}: {host!r} is not a compose service")
                targets.add(f"{host}:{dns.get('port')}")
    for target in ("ragstream-worker:9464", "ragstream-bridge:9464", "triton:8002"):
        report.check(target in targets, f"prometheus.yml: nothing scrapes {target}")
    if collector_port is not None:
        report.check(
            f"otel-collector:{collector_port}" in targets,
            f"prometheus.yml: nothing scrapes the collector's prometheus exporter (:{collector_port})",
        )
    report.checked.append(f"prometheus.yml ({len(jobs)} jobs)")


def check_grafana(
    report: Report, datasources: dict[str, Any], providers: dict[str, Any], services: Mapping[str, Any]
) -> None:
    sources = [_as_map(ds) for ds in _as_list(datasources.get("datasources"))]
    prom = [ds for ds in sources if ds.get("uid") == DATASOURCE_UID]
    if report.check(len(prom) == 1, f"grafana datasources: need exactly one data source with uid {DATASOURCE_UID!r}"):
        report.check(
            prom[0].get("type") == "prometheus",
            "grafana datasources: ragstream data source is not prometheus",
        )
        url = str(prom[0].get("url", ""))
        host = re.sub(r"^https?://", "", url).split(":", 1)[0].split("/", 1)[0]
        report.check(host in services, f"grafana datasources: url host {host!r} is not a compose service")
    mounts = {
        str(v).split(":")[1]
        for v in _as_list(_as_map(services.get("grafana")).get("volumes"))
        if isinstance(v, str) and str(v).startswith("./grafana/dashboards:")
    }
    paths = [str(_as_map(_as_map(p).get("options")).get("path")) for p in _as_list(providers.get("providers"))]
    report.check(
        bool(paths) and all(path in mounts for path in paths),
        f"grafana dashboards provider path(s) {paths} not mounted from ./grafana/dashboards ({mounts})",
    )
    report.checked.append("grafana provisioning")


def check_k8s(report: Report, yaml: Any, deploy_dir: Path, fields: set[str] | None) -> None:
    path = deploy_dir / "k8s" / "ragstream.yaml"
    if not path.is_file():
        report.skipped.append("k8s/ragstream.yaml not present (optional)")
        return
    try:
        docs = [_as_map(doc) for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    except yaml.YAMLError as exc:
        report.errors.append(f"k8s/ragstream.yaml: invalid YAML: {exc}")
        return
    labels_by_deployment: dict[str, dict[str, Any]] = {}
    for doc in docs:
        kind, name = doc.get("kind"), _as_map(doc.get("metadata")).get("name")
        where = f"k8s/ragstream.yaml {kind}/{name}"
        report.check(bool(doc.get("apiVersion") and kind and name), f"{where}: apiVersion/kind/metadata.name missing")
        if kind == "ConfigMap":
            _check_env_against_settings(report, _as_map(doc.get("data")), fields, where)
        if kind == "Deployment":
            template = _as_map(_as_map(doc.get("spec")).get("template"))
            labels_by_deployment[str(name)] = _as_map(_as_map(template.get("metadata")).get("labels"))
            selector = _as_map(_as_map(_as_map(doc.get("spec")).get("selector")).get("matchLabels"))
            report.check(
                bool(selector) and all(labels_by_deployment[str(name)].get(k) == v for k, v in selector.items()),
                f"{where}: selector does not match the pod template labels",
            )
            for container in map(_as_map, _as_list(_as_map(template.get("spec")).get("containers"))):
                report.check(
                    "readinessProbe" in container,
                    f"{where}: container {container.get('name')} has no readinessProbe",
                )
                _check_env_against_settings(
                    report,
                    {str(_as_map(e).get("name")) for e in _as_list(container.get("env"))},
                    fields,
                    where,
                )
        if kind == "Service":
            selector = _as_map(_as_map(doc.get("spec")).get("selector"))
            report.check(
                any(all(labels.get(k) == v for k, v in selector.items()) for labels in labels_by_deployment.values())
                and bool(selector),
                f"{where}: selector matches no Deployment in the file",
            )
    kinds = {(d.get("kind"), _as_map(d.get("metadata")).get("name")) for d in docs}
    for expected in (
        ("Deployment", "ragstream-worker"),
        ("Deployment", "ragstream-bridge"),
        ("Service", "ragstream-bridge"),
        ("ConfigMap", "ragstream-config"),
    ):
        report.check(expected in kinds, f"k8s/ragstream.yaml: {expected[0]}/{expected[1]} missing")
    report.checked.append(f"k8s/ragstream.yaml ({len(docs)} objects)")


# ------------------------------------------------------------------------------------------- app probes
APP_SERVICES = {"ragstream-worker": "worker", "ragstream-bridge": "bridge"}
_PROBE_URL = re.compile(r"https?://[^/'\"\s]+:(\d+)(/[^'\"\s]*)")


def app_probes(deploy_dir: Path = DEPLOY_DIR) -> list[tuple[str, str, int, str]]:
    """``(where, app, container port, HTTP path)`` of every health, readiness and liveness probe that compose and
    Kubernetes run against the worker and the bridge (``app`` is ``worker`` or ``bridge``). Needs PyYAML.

    A probe without an HTTP path (a TCP connect) is returned with path ``""``: it proves only that a port is open.
    """
    yaml = importlib.import_module("yaml")
    probes: list[tuple[str, str, int, str]] = []
    compose = _as_map(yaml.safe_load((deploy_dir / "compose.yaml").read_text(encoding="utf-8")))
    for name, app in APP_SERVICES.items():
        healthcheck = _as_map(_as_map(_as_map(compose.get("services")).get(name)).get("healthcheck"))
        found = _PROBE_URL.search(" ".join(map(str, _as_list(healthcheck.get("test")))))
        port, path = (int(found.group(1)), found.group(2)) if found else (0, "")
        probes.append((f"compose.yaml {name} healthcheck", app, port, path))
    k8s = deploy_dir / "k8s" / "ragstream.yaml"
    for doc in map(_as_map, yaml.safe_load_all(k8s.read_text(encoding="utf-8"))):
        deployment = APP_SERVICES.get(str(_as_map(doc.get("metadata")).get("name")))
        if doc.get("kind") != "Deployment" or deployment is None:
            continue
        template = _as_map(_as_map(doc.get("spec")).get("template"))
        for container in map(_as_map, _as_list(_as_map(template.get("spec")).get("containers"))):
            named = {
                str(_as_map(p).get("name")): _as_map(p).get("containerPort") for p in _as_list(container.get("ports"))
            }
            for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                probe = _as_map(container.get(kind))
                if not probe:
                    continue
                http = _as_map(probe.get("httpGet"))
                given = http.get("port") or _as_map(probe.get("tcpSocket")).get("port")
                number = str(named.get(str(given), given))
                where = f"k8s/ragstream.yaml {doc['metadata']['name']} {kind}"
                probes.append((where, deployment, int(number) if number.isdigit() else 0, str(http.get("path", ""))))
    return probes


def check_app_probes(report: Report, deploy_dir: Path, services: Mapping[str, Mapping[str, Any]]) -> None:
    """Each probe is an HTTP GET on the port where that process serves /healthz and /readyz."""
    env = _as_map(_as_map(services.get("ragstream-worker")).get("environment"))
    ports = {"worker": str(env.get("RAGSTREAM_METRICS_PORT")), "bridge": str(env.get("RAGSTREAM_BRIDGE_METRICS_PORT"))}
    for where, app, port, path in app_probes(deploy_dir):
        report.check(bool(path), f"{where}: not an HTTP probe (use GET /readyz or /healthz on the metrics port)")
        report.check(
            str(port) == ports[app], f"{where}: probes port {port}, the {app} serves its endpoints on {ports[app]}"
        )
    report.checked.append("app probes")


# ----------------------------------------------------------------------------------------------- driver
def validate(deploy_dir: Path = DEPLOY_DIR, *, require_yaml: bool = False) -> Report:
    report = Report()
    repo_root = deploy_dir.parent.parent
    fields = settings_fields(repo_root)
    if fields is None:
        report.skipped.append("infra/settings.py has no Settings class; RAGSTREAM_* names not cross-checked")

    check_headers(report, deploy_dir)
    check_dockerfile(report, deploy_dir)
    check_dashboards(report, deploy_dir)

    yaml = _load_yaml_module()
    if yaml is None:
        message = "PyYAML is not installed: YAML files were not parsed (pip install pyyaml)"
        (report.errors if require_yaml else report.skipped).append(message)
        return report

    compose = _read_yaml(report, yaml, deploy_dir, "compose.yaml")
    services = check_compose(report, compose, deploy_dir, fields) if compose is not None else {}
    otel = _read_yaml(report, yaml, deploy_dir, "otel-collector.yaml")
    collector_port = check_otel(report, otel, services) if otel is not None else None
    prom = _read_yaml(report, yaml, deploy_dir, "prometheus.yml")
    if prom is not None:
        check_prometheus(report, prom, services, collector_port)
    datasources = _read_yaml(report, yaml, deploy_dir, "grafana/provisioning/datasources/prometheus.yaml")
    providers = _read_yaml(report, yaml, deploy_dir, "grafana/provisioning/dashboards/dashboards.yaml")
    if datasources is not None and providers is not None:
        check_grafana(report, datasources, providers, services)
    check_k8s(report, yaml, deploy_dir, fields)
    if services:
        check_app_probes(report, deploy_dir, services)
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    report = validate(require_yaml="--require-yaml" in args)
    for item in report.checked:
        print(f"checked  {item}")
    for item in report.skipped:
        print(f"skipped  {item}")
    for item in report.errors:
        print(f"ERROR    {item}")
    print("infra/deploy: OK" if report.ok else f"infra/deploy: {len(report.errors)} problem(s)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
