"""The `geep` entry point: a Ctrl-C during start-up exits 130 with one line, and what the console script imports
first loads no torch (so the start-up imports happen inside main, where the interrupt is caught)."""

import builtins
import subprocess
import sys

import geep.cli.main as cli_main


def test_ctrl_c_while_the_subcommands_import_exits_130_quietly(monkeypatch, capsys):
    def interrupted(name, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main.importlib, "import_module", interrupted)
    assert cli_main.main(["info", "somewhere"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "interrupted\n" and captured.out == ""


def test_ctrl_c_while_transformers_imports_exits_130(monkeypatch, capsys):
    real_import = builtins.__import__

    def importing(name, *args, **kwargs):
        if name == "transformers":
            raise KeyboardInterrupt  # a Ctrl-C while transformers loads, after the arguments are parsed
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", importing)
    assert cli_main.main(["info", "somewhere"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_the_console_script_import_loads_no_torch():
    code = ("import sys, geep.cli.main; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_public_names_still_import():
    import geep

    assert {"predict", "Predictor", "MultiExitClassifier", "GeepError", "build_table", "calibrate"} <= set(dir(geep))
    from geep import MultiExitClassifier, predict  # noqa: F401

    assert geep.predict is predict
