"""`geep serve`'s command line: everything wrong is one line and exit status 2, before any server starts."""

from __future__ import annotations

import socket
import sys

import pytest

from geep.cli.main import main


@pytest.fixture
def model_dir(make_model, tmp_path):
    make_model(exit_layers=[1, 2]).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_without_the_extra_it_names_the_extra(model_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # importlib finds no fastapi
    assert main(["serve", "--model", str(model_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "fastapi missing" in err and "pip install 'geep[serve]'" in err


@pytest.mark.parametrize("extra,message", [
    (["--max-batch", "0"], "--max-batch must be at least 1, got 0"),
    (["--max-wait-ms", "-1"], "--max-wait-ms must be a finite number of at least 0, got -1"),
    (["--max-wait-ms", "inf"], "--max-wait-ms must be a finite number of at least 0, got inf"),  # lone rows: 504
    (["--max-wait-ms", "nan"], "--max-wait-ms must be a finite number of at least 0, got nan"),
    (["--request-timeout-s", "0"], "--request-timeout-s must be a finite number above 0, got 0"),
    (["--request-timeout-s", "inf"], "--request-timeout-s must be a finite number above 0, got inf"),
    (["--policy", ""], "--policy is empty"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--port", "70000"], "--port must be in 0..65535"),
    (["--api-key-env", "GEEP_TEST_NO_SUCH_VARIABLE"], "GEEP_TEST_NO_SUCH_VARIABLE: that environment variable"),
    (["--policy", "oracle"], "the oracle policy needs the true labels"),
    (["--policy", "geep"], "no exit table"),
    (["--policy", "fastbert", "--threshold", "2"], "threshold must be a number in [0, 1], got 2"),
    (["--policy", "fastbert", "--continue-threshold", "0.2"], "the fastbert policy has none"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_flags_are_one_line_and_exit_2(model_dir, capsys, extra, message):
    assert main(["serve", "--model", str(model_dir), "--port", "0", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err


def test_a_taken_port_and_a_missing_model_are_one_line(model_dir, tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model", str(model_dir), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "nothing"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and err.count("\n") == 0


def test_the_readme_lists_every_flag():
    from pathlib import Path

    from geep.cli.main import build_parser

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Serving over HTTP"):readme.index("## Layout")]
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    flags = [s for action in serve._actions for s in action.option_strings if s.startswith("--") and s != "--help"]
    missing = [flag for flag in flags if f"`{flag}" not in section and f"{flag}`" not in section]
    assert not missing, missing
