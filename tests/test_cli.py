"""Command-line flags and the Settings they give: flags win over the environment, which wins over
the defaults. Nothing is started."""
from __future__ import annotations

from pathlib import Path

import pytest

from raner_backend.cli import MODEL_DIR_COMMANDS, build_parser, cmd_serve, cmd_setup, settings_for
from raner_backend.settings import Settings

ENV = {"HOST": "127.0.0.2", "PORT": "9000", "MODEL_DIR": "/env/models"}


def settings(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    return settings_for(build_parser().parse_args(argv), env or {})


def test_serve_port_and_host_flags():
    args = build_parser().parse_args(["serve", "--port", "9091", "--host", "127.0.0.1"])
    assert args.func is cmd_serve and args.port == 9091 and args.host == "127.0.0.1"
    s = settings(["serve", "--port", "9091", "--host", "127.0.0.1"])
    assert (s.host, s.port) == ("127.0.0.1", 9091)


def test_serve_flags_win_over_the_environment_which_wins_over_the_defaults():
    assert (settings(["serve"]).host, settings(["serve"]).port) == (Settings.host, Settings.port)
    from_env = settings(["serve"], ENV)
    assert (from_env.host, from_env.port, from_env.model_dir) == ("127.0.0.2", 9000, Path("/env/models"))
    flags = settings(["serve", "--port", "9091", "--model-dir", "/flag/models"], ENV)
    assert (flags.host, flags.port, flags.model_dir) == ("127.0.0.2", 9091, Path("/flag/models"))


def test_serve_port_must_be_a_number(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--port", "nine"])
    assert "invalid int value" in capsys.readouterr().err


@pytest.mark.parametrize("command", MODEL_DIR_COMMANDS)
def test_model_dir_before_or_after_every_command_that_reads_it(command):
    extra = {"rollback": ["raner-1-00000000"], "rank": ["--project", "1"]}.get(command, [])
    after = settings([command, *extra, "--model-dir", "/after"], ENV)
    before = settings(["--model-dir", "/before", command, *extra], ENV)
    assert after.model_dir == Path("/after") and before.model_dir == Path("/before")
    assert settings([command, *extra], ENV).model_dir == Path("/env/models")
    assert settings([command, *extra]).model_dir == Settings.model_dir


def test_model_dir_expands_the_home_folder():
    assert settings(["setup", "--model-dir", "~/models"]).model_dir == Path("~/models").expanduser()


def test_setup_verbose_flag():
    args = build_parser().parse_args(["setup"])
    assert args.func is cmd_setup and args.verbose is False
    assert build_parser().parse_args(["setup", "--verbose"]).verbose is True


def test_other_settings_still_come_from_the_environment():
    s = settings(["serve", "--port", "9091"], {"ENGINE": "torch", "CACHE_SIZE": "7", "PORT": "1"})
    assert (s.engine, s.cache_size, s.port) == ("torch", 7, 9091)


def test_a_malformed_setting_stops_the_start_with_its_name(capsys, monkeypatch):
    from raner_backend.cli import main

    monkeypatch.setenv("LABEL_MAP", "人物:PER")
    assert main(["versions"]) == 2
    assert "LABEL_MAP entry '人物:PER' is not of the form label=TYPE" in capsys.readouterr().err
    monkeypatch.setenv("LABEL_MAP", "人物=PER")
    monkeypatch.setenv("PORT", "ninety")
    assert main(["serve"]) == 2
    assert "PORT='ninety' is not a valid int" in capsys.readouterr().err


def test_predict_beside_a_serving_backend_leaves_its_staging_and_pointers_alone(tiny_settings, monkeypatch, capsys):
    import json

    from raner_backend.cli import main
    from raner_backend.model.registry import Registry

    registry = Registry(tiny_settings.model_dir)
    writing = registry.new_staging()  # a deployment the serving backend is writing
    (writing / "head.safetensors").write_bytes(b"half written")
    pointer = (tiny_settings.model_dir / "CURRENT").read_bytes()
    for name in ("model_dir", "cache_dir", "base_model"):
        monkeypatch.setenv(name.upper(), str(getattr(tiny_settings, name)))
    assert main(["predict", "马云在杭州"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["entities"] is not None
    assert (writing / "head.safetensors").read_bytes() == b"half written"
    assert (tiny_settings.model_dir / "CURRENT").read_bytes() == pointer
