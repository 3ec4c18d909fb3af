"""Settings as flags and environment variables: every field of ``Settings`` is a ``serve``
flag listed in ``--help`` with its ``DRIFTGATE_*`` twin; an unknown ``DRIFTGATE_*`` variable
fails start-up in one line naming the nearest setting; ``--providers`` and the temporary
folder trial loads need are checked before anything is served."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from gateway.cli import EXIT_USAGE, build_parser, main
from gateway.config import ENV_PREFIX, FLAGS, NOT_SETTINGS, Settings, load_settings, setting_help
from gateway.errors import ConfigError
from gateway.runtime import parse_providers

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("driftgate: error: ")
    return lines[0]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in list(os.environ):
        if var.startswith(ENV_PREFIX):
            monkeypatch.delenv(var)
    return monkeypatch


def test_every_setting_is_a_serve_flag_in_help_with_its_environment_twin(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert set(FLAGS) == set(Settings.__struct_fields__)
    for field, flag in FLAGS.items():
        assert f"{flag} " in text or f"{flag}," in text, flag
        assert f"{ENV_PREFIX}{field.upper()})" in text, field
    assert len(set(FLAGS.values())) == len(FLAGS)


def test_flags_reach_their_settings_and_beat_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    argv = [
        "serve", "--watch-interval", "0.5", "--no-guards", "--drain-seconds", "3", "--intra-op-threads", "2",
        "--drift-window-seconds", "60", "--max-body-bytes-in-flight", "4096", "--providers", "cpu",
        "--request-timeout", "7", "--batch", "a=4:1", "--batch", "b=8:2",
    ]  # fmt: skip
    args = build_parser().parse_args(argv)
    overrides = {field: getattr(args, flag.removeprefix("--").replace("-", "_")) for field, flag in FLAGS.items()}
    overrides["batching"] = ",".join(overrides["batching"])
    overrides["metrics_detail"] = None
    settings = load_settings({"DRIFTGATE_WATCH_INTERVAL": "9", "DRIFTGATE_PORT": "9999"}, **overrides)
    assert (settings.watch_interval, settings.port, settings.guards, settings.drain_seconds) == (0.5, 9999, False, 3.0)
    assert (settings.intra_op_threads, settings.drift_window_seconds, settings.max_body_bytes_in_flight) == (2, 60.0, 4096)
    assert (settings.request_timeout_seconds, settings.batching, settings.monitoring) == (7.0, "a=4:1,b=8:2", True)


def test_every_field_has_help_text_or_a_hand_written_one() -> None:
    from gateway.cli import _SERVE_FLAGS

    helped = set(setting_help()) | set(_SERVE_FLAGS)
    assert set(Settings.__struct_fields__) <= helped
    assert setting_help()["watch_interval"].startswith("Seconds between scans")


@pytest.mark.parametrize(
    ("var", "nearest"),
    [
        ("DRIFTGATE_PROT", "DRIFTGATE_PORT"),
        ("DRIFTGATE_WATCH_INTERVALL", "DRIFTGATE_WATCH_INTERVAL"),
        ("DRIFTGATE_ADMINTOKEN", "DRIFTGATE_ADMIN_TOKEN"),
        ("DRIFTGATE_REQUEST_TIMEOUT", "DRIFTGATE_REQUEST_TIMEOUT_SECONDS"),
        ("DRIFTGATE_XYZZY", None),
    ],
)
def test_an_unknown_variable_is_a_config_error_naming_the_nearest_setting(var: str, nearest: str | None) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({var: "1", "DRIFTGATE_PORT": "8081"})
    message = str(caught.value)
    assert var in message
    if nearest is None:
        assert "did you mean" not in message
    else:
        assert message.endswith(f"did you mean {nearest}?")


def test_an_unknown_variable_fails_serve_in_one_line(tmp_path: Path) -> None:
    """The real entry point, as a container would run it: one line, exit 2, nothing served."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env |= {"DRIFTGATE_REPOSITORY": str(MODELS), "DRIFTGATE_PORT": "0", "DRIFTGATE_MAX_BATCH_ROW": "10"}
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == EXIT_USAGE, done.stderr
    line = _one_error_line(done.stderr)
    assert "DRIFTGATE_MAX_BATCH_ROW:" in line and "did you mean DRIFTGATE_MAX_BATCH_ROWS?" in line


def test_every_driftgate_variable_in_the_repository_is_a_setting_or_allowed() -> None:
    """Tests, the Dockerfile, deploy/ and CI: a name that is no setting would now stop the server."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.split()
    files = [ROOT / f for f in listed] or [p for p in ROOT.rglob("*") if ".venv" not in p.parts and ".git" not in p.parts]
    known = {ENV_PREFIX + field.upper() for field in Settings.__struct_fields__} | NOT_SETTINGS
    found: dict[str, str] = {}
    for path in files:
        if not path.is_file() or path.suffix in (".onnx", ".parquet", ".gz", ".png") or path.name == Path(__file__).name:
            continue
        for name in re.findall(r"\bDRIFTGATE_[A-Z][A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="replace")):
            found.setdefault(name, str(path.relative_to(ROOT)))
    unknown = {name: where for name, where in found.items() if name not in known}
    assert not unknown, unknown
    assert "DRIFTGATE_ADMIN_TOKEN" in found  # the scan saw the repository


def test_providers_default_to_cpu_and_keep_their_order() -> None:
    assert load_settings({}).providers == "cpu"
    assert parse_providers("cpu") == ["CPUExecutionProvider"]
    assert parse_providers(" CPUExecutionProvider , cpu") == ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if "AzureExecutionProvider" in available:
        assert parse_providers("azure,cpu") == ["AzureExecutionProvider", "CPUExecutionProvider"]


def test_a_provider_onnxruntime_lacks_fails_serve_in_one_line(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    assert main(["serve", "--repository", str(MODELS), "--port", "0", "--providers", "cuda,cpu"]) == EXIT_USAGE
    line = _one_error_line(capsys.readouterr().err)
    assert "--providers" in line and "'cuda' (CUDAExecutionProvider) is not available" in line and "cpu" in line
    assert main(["serve", "--repository", str(MODELS), "--port", "0", "--providers", "gpu"]) == EXIT_USAGE
    assert "unknown execution provider 'gpu'" in _one_error_line(capsys.readouterr().err)


def test_sessions_use_the_chosen_providers() -> None:
    from gateway.registry import load_model
    from gateway.runtime import use_providers

    entry = MODELS / "penguins" / "1"
    assert use_providers("cpu") == ["CPUExecutionProvider"]
    model = load_model("penguins", 1, (entry / "model.onnx").read_bytes(), (entry / "spec.yaml").read_bytes())
    assert model.runtime.session.get_providers() == ["CPUExecutionProvider"]  # type: ignore[attr-defined]


def test_a_temporary_folder_that_cannot_be_written_fails_serve_in_one_line(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trial loads need a scratch folder (a read-only root without a writable /tmp): without
    this check every model failed to load and the server still said ready, with none."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    unwritable = tmp_path / "read-only"
    unwritable.mkdir(mode=0o555)
    cases = [not_a_folder] + ([unwritable] if os.geteuid() != 0 else [])  # root writes anywhere
    for folder in cases:
        clean_env.setenv("TMPDIR", str(folder))
        assert main(["serve", "--repository", str(MODELS), "--port", "0"]) == EXIT_USAGE
        line = _one_error_line(capsys.readouterr().err)
        assert f"TMPDIR={folder} is not a writable folder" in line and "mount a writable /tmp" in line
