"""Secrets never reach a trace, a chain or a page: app settings, credential headers, a deny-list."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dispel import catalog, verify
from dispel.values import Normalizer, learn_secrets

ROOT = Path(__file__).resolve().parents[1]
SECRET = "known-secret-4711-do-not-publish"


def test_settings_named_secret_are_learned():
    learned = learn_secrets([], {"SECRET_KEY": SECRET, "DEBUG": False, "API_TOKEN": "tok-123456", "NAME": "chat"})
    assert set(learned.values()) == {"<secret:SECRET_KEY>", "<secret:API_TOKEN>"}
    assert learned[SECRET] == "<secret:SECRET_KEY>" and learned["tok-123456"] == "<secret:API_TOKEN>"
    assert "chat" not in learned


def test_credential_headers_are_learned_and_scrubbed():
    request = b"GET / HTTP/1.1\r\nCookie: session=abc.def.ghi\r\nAuthorization: Bearer xyz-987654\r\nHost: a\r\n\r\n"
    learned = learn_secrets([request], {})
    assert {"session=abc.def.ghi", "Bearer xyz-987654", "abc.def.ghi", "xyz-987654"} <= set(learned)
    norm = Normalizer(0, learned)
    text = norm.text(request)
    assert "abc.def" not in text and "xyz-987654" not in text
    assert "Cookie: <redacted>" in text and "Host: a" in text
    assert norm.text("session=abc.def.ghi") == "'<redacted>'"  # the value alone, elsewhere


def test_deny_list_pattern():
    norm = Normalizer(0, {}, deny=(r"card-\d{4}",))
    assert norm.text("pay with card-1234 now") == "'pay with <redacted> now'"


def test_the_sessions_ids_and_paths_are_placeholders():
    norm = Normalizer(0, {"A1b2C3d4E5f6G7h8I9j0": "<sid-1>"}, {"/home/me/project": "<project>"})
    assert norm.text('40{"sid":"A1b2C3d4E5f6G7h8I9j0"}') == "'40{\"sid\":\"<sid-1>\"}'"
    assert norm.text("/home/me/project/app.py") == "'<project>/app.py'"


@pytest.mark.slow
def test_a_known_secret_is_in_no_trace_chain_or_page(tmp_path):
    env = {**__import__("os").environ, "SECRET_KEY": SECRET}
    run = lambda *a: subprocess.run([sys.executable, "-m", "dispel", *a], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)  # noqa: E731
    traces = tmp_path / "traces"
    # Every default scenario this machine can record (without Chromium, all but the browser's).
    names, _ = verify.rerecordable()
    proc = run("record", *names, "--out", str(traces), "--redact", r"Werkzeug/[0-9.]+")
    assert proc.returncode == 0, proc.stderr
    journeys = [j.name for j in catalog.JOURNEYS if j.scenario in names]
    assert run("chains", *journeys, "--traces", str(traces)).returncode == 0
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs" / "annotations", docs / "annotations")
    proc = run("render", "--chains", str(traces / "chains"), "--out", str(docs))
    assert proc.returncode == 0, proc.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".md")]
    assert len(written) > 5
    for path in written:
        text = path.read_text(encoding="utf-8")
        assert SECRET not in text, f"the secret leaked into {path.relative_to(tmp_path)}"
        assert "Werkzeug/3" not in text or path.parent.name == "annotations", path  # the deny-list
    assert "<secret:SECRET_KEY>" in (traces / "chat.json").read_text()

