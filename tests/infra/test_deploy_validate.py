"""infra/deploy/validate.py on the real deployment files, and the dashboard checks it makes against the code."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from infra.settings import REPO_ROOT
from tests.conftest import deploy_validate


@pytest.fixture(scope="module")
def validate() -> ModuleType:
    return deploy_validate()


def test_the_deployment_files_pass_their_static_checks(validate: ModuleType) -> None:
    report = validate.validate(require_yaml=True)
    assert report.ok, report.errors


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum(rate(ragstream_requests_total[5m]))", {"ragstream_requests_total"}),
        (
            'histogram_quantile(0.95, sum by (le, model) (rate(ragstream_ttft_seconds_bucket{model="a(b"}[5m])))',
            {"ragstream_ttft_seconds_bucket"},
        ),
        ("a / on(model) group_left(x) b offset 5m", {"a", "b"}),
        ('1 - sum(x{outcome!="error"}) / sum(y) or vector(0)', {"x", "y"}),
    ],
)
def test_metric_names_are_read_out_of_promql(validate: ModuleType, expr: str, names: set[str]) -> None:
    assert validate.expression_metrics(expr) == names


def test_a_panel_querying_a_metric_no_code_emits_is_an_error(validate: ModuleType) -> None:
    emitted = validate.code_metrics(REPO_ROOT)
    assert "ragstream_requests_total" in emitted and "ragstream_ttft_seconds_bucket" in emitted
    queried = [f"sum(rate({name}[5m]))" for name in emitted if not name.startswith("!")]
    report = validate.Report()
    validate._check_metric_names(report, "d.json", [*queried, "rate(ragstream_cache_hits_total[5m])"], emitted)
    assert report.errors == ["d.json: ragstream_cache_hits_total is queried but no code emits it "
                             "(instruments: ('streams', 'processors'))"]  # fmt: skip


def test_an_instrument_that_no_panel_shows_is_an_error(validate: ModuleType) -> None:
    emitted = validate.code_metrics(REPO_ROOT)
    queried = [f"sum({name})" for name in emitted if not name.startswith(("!", "ragstream_consumer_lag"))]
    report = validate.Report()
    validate._check_metric_names(report, "d.json", queried, emitted)
    assert len(report.errors) == 1 and "no panel shows ragstream_consumer_lag" in report.errors[0]


def _compose_problems(validate: ModuleType, change: Callable[[dict[str, Any]], None]) -> list[str]:
    yaml = validate._load_yaml_module()
    compose = yaml.safe_load((validate.DEPLOY_DIR / "compose.yaml").read_text())
    change(compose["services"])
    report = validate.Report()
    validate.check_compose(report, compose, validate.DEPLOY_DIR, validate.settings_fields(REPO_ROOT))
    return report.errors


def test_kafka_must_stay_secured_in_compose(validate: ModuleType) -> None:
    assert _compose_problems(validate, lambda services: None) == []

    def plaintext_listener(services: dict[str, Any]) -> None:
        env = services["kafka"]["environment"]
        env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] += ",OPEN:PLAINTEXT"

    def open_authorizer(services: dict[str, Any]) -> None:
        services["kafka"]["environment"]["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] = "true"

    def anonymous_bridge(services: dict[str, Any]) -> None:
        del services["ragstream-bridge"]["environment"]["RAGSTREAM_KAFKA_PASSWORD"]

    def restarting_job(services: dict[str, Any]) -> None:
        services["kafka-setup"]["restart"] = "unless-stopped"

    assert any("every Kafka listener must use SASL" in e for e in _compose_problems(validate, plaintext_listener))
    assert any("must enforce ACLs" in e for e in _compose_problems(validate, open_authorizer))
    assert any("'ragstream-bridge': must log in" in e for e in _compose_problems(validate, anonymous_bridge))
    problems = _compose_problems(validate, restarting_job)
    assert any("waits for 'kafka-setup' to complete" in e for e in problems)
    assert any("'kafka-setup': no healthcheck" in e for e in problems)
