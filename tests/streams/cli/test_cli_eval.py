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
