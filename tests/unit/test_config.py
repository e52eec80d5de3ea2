"""Config errors name the field path and the file; secret references resolve or say why not."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from gateway_app.config import ConfigError, load_settings, parse_settings
from tests.conftest import base_config
from tests.support.processes import REPO, run_cli

ENV = {"GATEWAY_SEED_KEY": "x", "GATEWAY_BOOTSTRAP_ADMIN_PASSWORD": "pw"}


def problems_of(data: dict, environ: dict | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, "test.yaml", environ=ENV if environ is None else environ)
    return dict(caught.value.problems)


def test_example_configs_are_valid() -> None:
    root = REPO / "gateway_app" / "examples"
    env = {**ENV, "GATEWAY_DATABASE_URL": "postgresql://u@h/db", "OPENAI_API_KEY": "k", "VLLM_API_KEY": "k"}
    for name in ("local.yaml", "production.yaml"):
        settings = parse_settings(yaml.safe_load((root / name).read_text()), name, environ=env)
        assert settings.models, name


def test_unknown_field_is_named_with_its_path() -> None:
    data = base_config("sqlite:///x.db")
    data["providers"][0]["api_kye"] = "env.X"
    assert problems_of(data) == {"providers[0].api_kye": "unknown field"}


def test_missing_environment_variable_names_field_and_variable() -> None:
    data = base_config("sqlite:///x.db")
    problems = problems_of(data, environ={"GATEWAY_BOOTSTRAP_ADMIN_PASSWORD": "pw"})
    assert problems == {
        "service_accounts[0].keys[0].secret": "environment variable GATEWAY_SEED_KEY is not set"
    }


def test_plain_secret_is_refused() -> None:
    data = base_config("sqlite:///x.db")
    data["database"]["url"] = "sqlite:///x.db"
    problems = problems_of(data)
    assert "env.NAME, file.PATH or literal.VALUE" in problems["database.url"]


def test_route_to_unknown_provider() -> None:
    data = base_config("sqlite:///x.db")
    data["models"][0]["routes"][0]["provider"] = "nope"
    problems = problems_of(data)
    assert problems == {"models[0].routes[0].provider": "unknown provider 'nope'; declared: echo"}


def test_wrong_type_names_the_field() -> None:
    data = base_config("sqlite:///x.db")
    data["server"]["port"] = "eighty"
    assert "valid integer" in problems_of(data)["server.port"]


def test_cross_section_checks() -> None:
    data = base_config("sqlite:///x.db")
    data["providers"].append(
        {"name": "vertex", "type": "gcp_vertex", "project": "p", "location": "europe-west4"}
    )
    data["providers"].append(
        {"name": "up", "type": "openai_compat", "base_url": "http://u", "pricing_provider_id": "nonesuch"}
    )
    data["models"].append({"name": "gem", "routes": [{"provider": "vertex", "upstream_model": "gemini-2.0"}]})
    data["models"].append(copy.deepcopy(data["models"][0]))
    problems = problems_of(data)
    assert "<publisher>/<model_id>" in problems["models[1].routes[0].upstream_model"]
    assert "not in the bundled pricing catalog" in problems["providers[2].pricing_provider_id"]
    assert "declared twice" in problems["models[2].name"]


def test_openai_compat_needs_pricing_provider_id() -> None:
    data = base_config("sqlite:///x.db")
    data["providers"].append({"name": "up", "type": "openai_compat", "base_url": "http://u"})
    assert "pricing_provider_id" in problems_of(data)["providers[1]"]


def test_load_reports_file_and_yaml_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("server:\n  port: [1,\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    assert str(path) in str(caught.value)
    assert "line" in caught.value.problems[0][0]


def test_secret_values_never_appear_in_errors() -> None:
    data = base_config("sqlite:///x.db")
    data["database"]["url"] = "literal.postgresql://user:hunter2@db/x"
    data["database"]["pool_min"] = 50
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, "t.yaml", environ=ENV)
    assert "hunter2" not in str(caught.value)
    assert (
        repr(parse_settings(base_config("sqlite:///x.db"), environ=ENV).database.url)
        == "SecretRef(literal.<literal>)"
    )


def test_cli_config_validate_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(base_config("sqlite:///x.db")))
    ok = run_cli("config", "validate", "--config", str(good), env=ENV)
    assert ok.returncode == 0, ok.stderr
    assert "is valid" in ok.stdout
    bad_data = base_config("sqlite:///x.db")
    bad_data["request_logging"] = {"mode": "everything"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(bad_data))
    failed = run_cli("config", "validate", "--config", str(bad), env=ENV)
    assert failed.returncode == 2
    assert str(bad) in failed.stderr and "request_logging.mode" in failed.stderr
