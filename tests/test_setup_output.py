"""`raner-backend setup` prints one line per step; the exporters' chatter goes to a details log."""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from raner_backend.console import details, reporting, step

REPO = Path(__file__).resolve().parents[1]
BACKEND_BIN = REPO / ".venv" / "bin" / "raner-backend"


def _noisy_call():
    print("[torch.onnx] Obtain model graph ... done")
    print("progress 50%", file=sys.stderr)
    warnings.warn("The axis name: batch will not be used", UserWarning)
    logging.getLogger("onnx_ir.passes.common.initializer_deduplication").warning("Replaced initializer 'val_1'")
    logging.getLogger("torch.onnx._internal.exporter").warning("torchvision is not installed")
    logging.warning("Quantization parameters for tensor not specified")  # on the root logger itself
    logging.getLogger("fusion_base").warning("Fused Attention: 10")  # ONNX Runtime's optimizer: bare module names


def test_details_go_to_the_details_file_and_steps_to_the_console(tmp_path, capfd):
    out = io.StringIO()
    log_file = tmp_path / "logs" / "setup.log"
    torch_logger = logging.getLogger("torch.onnx._internal.exporter")
    with reporting(log_file, out=out):
        with step("export ONNX: model head") as s, details("export"):
            _noisy_call()
            s.note = "ok"
        logging.getLogger("raner_backend.service").info("installed the default model")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].split()[:3] == ["export", "ONNX:", "model"], lines
    assert lines[0].rstrip().endswith(" s  ok")
    written = log_file.read_text()
    for text in ("Obtain model graph", "progress 50%", "axis name", "Replaced initializer", "torchvision",
                 "Quantization parameters", "Fused Attention", "installed the default model"):
        assert text in written, text
    console = capfd.readouterr()
    assert "Replaced" not in console.out + console.err and "axis name" not in console.out + console.err
    assert "Quantization parameters" not in console.out + console.err and "Fused" not in console.out + console.err
    # the loggers are as they were
    assert torch_logger.handlers == logging.getLogger("torch.onnx._internal.exporter").handlers
    assert logging.getLogger("onnx_ir").propagate


def test_details_outside_setup_are_kept_off_the_console(capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="raner_backend.details")
    with details("export"):
        _noisy_call()
    console = capfd.readouterr()
    assert "Obtain model graph" not in console.out and "axis name" not in console.err
    assert any("Replaced initializer" in r.getMessage() for r in caplog.records)


def test_a_failing_step_says_so_and_shows_the_last_details(caplog):
    out = io.StringIO()
    with pytest.raises(RuntimeError), reporting(None, out=out):
        with step("quantize INT8: encoder"), details("quantize"):
            print("the last thing it said")
            raise RuntimeError("boom")
    assert "failed" in out.getvalue()
    assert any("the last thing it said" in r.getMessage() for r in caplog.records)


def test_verbose_lets_everything_through(tmp_path, capsys):
    with reporting(tmp_path / "setup.log", verbose=True, out=io.StringIO()), details("export"):
        print("[torch.onnx] Obtain model graph ... done")
    assert "Obtain model graph" in capsys.readouterr().out
    assert not (tmp_path / "setup.log").exists()


@pytest.mark.slow
def test_setup_from_scratch_prints_a_few_lines(tmp_path):
    """A fresh CACHE_DIR and MODEL_DIR: converts the encoder and exports the model (about a minute)."""
    if not BACKEND_BIN.exists():
        pytest.skip(f"{BACKEND_BIN} is not installed (scripts/install.sh)")
    env = dict(os.environ, MODEL_DIR=str(tmp_path / "models"), CACHE_DIR=str(tmp_path / "cache"))
    env.pop("ENGINE", None)
    done = subprocess.run([str(BACKEND_BIN), "setup"], env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    lines = output.splitlines()
    assert len(lines) <= 10, output
    assert not any("TorchScript" in line or "Fused" in line for line in lines), output
    assert any(line.split()[:3] == ["convert", "base", "encoder"] for line in lines), output
    assert any(line.split()[:3] == ["install", "default", "model"] for line in lines), output
    assert lines[-1].startswith("ready in ") and "setup.log" in lines[-1]
    details = (tmp_path / "cache" / "logs" / "setup.log").read_text()
    assert "TorchScript-based ONNX export" in details and "Fused Attention" in details
    assert (tmp_path / "models" / "CURRENT").is_file()
