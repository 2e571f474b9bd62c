"""Security scan: bandit + detect-secrets findings with CWE, OWASP and severity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from qits.errors import PathNotFound
from qits.owasp import owasp_category
from qits.quality_cli import security_scan_command
from qits.security import bandit_severity, security_scan

VULNERABLE = """\
import hashlib
import subprocess

import yaml

AWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"


def run(cmd):
    return subprocess.call(cmd, shell=True)


def load(text):
    return yaml.load(text)


def digest(data):
    return hashlib.md5(data).hexdigest()
"""

CLEAN = """\
import json


def parse(text: str) -> dict:
    return json.loads(text)
"""


@pytest.fixture
def vulnerable(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "service.py").write_text(VULNERABLE)
    return app


def by_rule(findings: list) -> dict:
    return {f.rule_id: f for f in findings}


def test_findings_carry_cwe_owasp_and_line(vulnerable: Path):
    report = security_scan([vulnerable])
    found = by_rule(report.findings)
    shell = found["B602"]
    assert (shell.tool, shell.line, shell.cwe, shell.owasp, shell.severity) == (
        "bandit",
        10,
        "CWE-78",
        "A03:2021-Injection",
        "critical",
    )
    assert found["B506"].cwe == "CWE-20"  # yaml.load
    assert found["B506"].severity == "medium"
    assert found["B324"].cwe == "CWE-327"  # md5
    assert found["B324"].owasp == "A02:2021-Cryptographic Failures"
    aws = found["AWS Access Key"]
    assert (aws.tool, aws.line, aws.cwe, aws.severity, aws.confidence) == (
        "detect-secrets",
        6,
        "CWE-798",
        "critical",
        "high",
    )
    assert aws.owasp == "A07:2021-Identification and Authentication Failures"
    assert all(f.file.endswith("service.py") for f in report.findings)
    assert report.critical == 3


def test_severity_filter_keeps_that_level_and_above(vulnerable: Path):
    everything = security_scan([vulnerable], severity="low")
    medium_up = security_scan([vulnerable], severity="medium")
    critical = security_scan([vulnerable], severity="critical")
    assert any(f.severity == "low" for f in everything.findings)  # B404 import subprocess
    assert {f.severity for f in medium_up.findings} == {"medium", "critical"}
    assert {f.rule_id for f in critical.findings} == {"B602", "B324", "AWS Access Key"}
    assert medium_up.counts["low"] == 0


def test_clean_file_has_no_findings(tmp_path: Path):
    (tmp_path / "clean.py").write_text(CLEAN)
    report = security_scan([tmp_path])
    assert report.findings == []
    assert report.critical == 0


def test_several_targets_are_scanned(vulnerable: Path, tmp_path: Path):
    config = tmp_path / "config"
    config.mkdir()
    (config / "settings.py").write_text('GITHUB_TOKEN = "ghp_' + "a1B2c3D4" * 4 + 'e5F6"\n')
    report = security_scan([vulnerable, config], severity="critical")
    files = {Path(f.file).name for f in report.findings}
    assert files == {"service.py", "settings.py"}


def test_missing_target_is_named(tmp_path: Path):
    with pytest.raises(PathNotFound, match="nowhere"):
        security_scan([tmp_path / "nowhere"])


def test_bandit_high_high_is_critical_others_keep_their_level():
    assert bandit_severity("HIGH", "HIGH") == "critical"
    assert bandit_severity("HIGH", "MEDIUM") == "high"
    assert bandit_severity("MEDIUM", "HIGH") == "medium"
    assert bandit_severity("LOW", "LOW") == "low"


def test_owasp_mapping_follows_owasp_lists():
    assert owasp_category(89) == "A03:2021-Injection"
    assert owasp_category(798) == "A07:2021-Identification and Authentication Failures"
    assert owasp_category(502) == "A08:2021-Software and Data Integrity Failures"
    assert owasp_category(22) == "A01:2021-Broken Access Control"
    assert owasp_category(703) is None  # OWASP maps CWE-703 to no category
    assert owasp_category(None) is None


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(security_scan_command)
    return app


def test_cli_fails_on_findings_at_or_above_fail_on(vulnerable: Path):
    result = CliRunner().invoke(cli(), ["--targets", str(vulnerable), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["counts"]["critical"] == 3
    assert {f["owasp"] for f in data["findings"]} >= {"A03:2021-Injection"}


def test_cli_passes_when_nothing_reaches_fail_on(vulnerable: Path, tmp_path: Path):
    (tmp_path / "clean.py").write_text(CLEAN)
    clean = CliRunner().invoke(cli(), ["--targets", str(tmp_path / "clean.py")])
    assert clean.exit_code == 0, clean.output
    lenient = CliRunner().invoke(cli(), ["--targets", str(vulnerable), "--fail-on", "none"])
    assert lenient.exit_code == 0
    assert "B602" in lenient.stdout
