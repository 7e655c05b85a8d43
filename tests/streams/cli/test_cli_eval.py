"""``ragstream eval`` subcommands that need no services."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from processors.evaluation.golden import DEFAULT_FAQ_DIR

GENERAL = DEFAULT_FAQ_DIR / "general.html"


@pytest.mark.usefixtures("python_docs")
def test_build_golden_cli(tmp_path: Path) -> None:
    from streams.cli.app import cli

    out = tmp_path / "g.jsonl"
    result = CliRunner().invoke(cli, ["eval", "build-golden", "--faq-dir", str(DEFAULT_FAQ_DIR), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "out-of-corpus" in result.output
    assert len(out.read_text().splitlines()) > 150


def test_every_case_failed_reads_a_single_run_and_each_configuration_of_a_matrix() -> None:
    from streams.cli.eval import every_case_failed

    def run(error_rate: float) -> dict[str, object]:
        return {"kind": "eval", "run_id": "2fc7943950eb", "quality": {"error_rate": error_rate}}

    assert every_case_failed(run(1.0)) and not every_case_failed(run(0.0))
    matrix = {"kind": "eval_matrix", "rows": [], "run_0": run(1.0), "run_1": run(0.2)}
    assert not every_case_failed(matrix)
    assert every_case_failed({**matrix, "run_1": run(1.0)})
