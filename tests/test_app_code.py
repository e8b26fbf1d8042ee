"""Which files are the app's (every module under the project root, never a virtual environment,
installed packages or dispel itself), how they are named, and which app files shadow the
standard library: scenarios.AppCode and scenarios.shadowing on folders made here."""
from __future__ import annotations

import sys
from pathlib import Path

import dispel
import pytest
from dispel.run import runner as scenarios
from dispel.tracefiles.codec import locate


def touch(path: Path, text: str = "") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_every_module_under_the_root_is_the_apps_but_venvs_site_packages_and_dispel(tmp_path):
    app = scenarios.AppCode(str(tmp_path))
    assert app(touch(tmp_path / "wsgi.py"))
    assert app(touch(tmp_path / "src" / "shop" / "events.py"))
    assert app(touch(tmp_path / "shop" / "handlers" / "chat.py"))
    touch(tmp_path / "env" / "pyvenv.cfg", "home = /usr/bin\n")
    assert not app(touch(tmp_path / "env" / "lib" / "python3.11" / "flask_thing.py"))
    assert not app(touch(tmp_path / "vendor" / "site-packages" / "lib.py"))
    assert not app(touch(tmp_path / "notes.txt"))
    assert not app(str(tmp_path.parent / "elsewhere.py"))
    dispel_dir = Path(dispel.__file__).parent
    assert not scenarios.AppCode(str(dispel_dir.parent))(str(dispel_dir / "cli.py")), "dispel itself is never the app"
    assert not scenarios.AppCode("/")(sys.modules["json"].__file__), "nor the standard library"


def test_the_sample_app_inside_dispel_is_an_app_and_the_rest_of_dispel_is_not():
    """dispel.sample_app ships inside the dispel package: the recorder's filter for the catalogue's
    scenarios (wanted_code) and a scenario file's app filter (AppCode, rooted at the sample's folder
    or above dispel) take its code, and never the code of dispel's own modules."""
    from dispel import cli
    from dispel.record import recorder
    from dispel.sample_app import app as sample

    want = scenarios.wanted_code()
    for func in (sample.on_chat, sample.on_join, sample.main):
        assert want(func.__code__), func.__qualname__
    for func in (cli.main, scenarios.run, scenarios.wanted_code, recorder.SettraceRecorder.start):
        assert not want(func.__code__), func.__qualname__
    sample_dir = Path(sample.__file__).parent
    for root in (sample_dir, sample_dir.parent, sample_dir.parent.parent):
        app = scenarios.AppCode(str(root))
        assert app(sample.__file__) and app(str(sample_dir / "cluster.py")), root
        assert not app(cli.__file__) and not app(scenarios.__file__), root
    source, module = locate(scenarios.AppCode(str(sample_dir)).roots([]), sample.__file__)
    assert (source.dist, source.path, module) == ("sample_app", "app.py", "app")


def test_a_src_layout_names_modules_from_src_and_keeps_paths_from_the_root(tmp_path):
    app = scenarios.AppCode(str(tmp_path))
    roots = app.roots([str(tmp_path / "src"), str(tmp_path), "/usr/lib/python3"])
    source, module = locate(roots, touch(tmp_path / "src" / "shop" / "events.py"))
    assert (source.dist, source.path, module) == ("sample_app", "src/shop/events.py", "shop.events")
    source, module = locate(roots, touch(tmp_path / "wsgi.py"))
    assert (source.path, module) == ("wsgi.py", "wsgi")


def test_an_app_file_named_like_a_standard_library_module_is_named_with_the_fix(tmp_path):
    touch(tmp_path / "chat.py")
    assert scenarios.shadowing([str(tmp_path)]) == ""
    touch(tmp_path / "queue.py")
    why = scenarios.shadowing([str(tmp_path), str(tmp_path)])
    assert "queue.py shadows the standard library's module 'queue'" in why and "rename it" in why
    other = tmp_path / "pkg"
    touch(other / "select" / "__init__.py")
    assert "module 'select'" in scenarios.shadowing([str(other)])
    touch(tmp_path / "site" / "index.html")  # a folder that is no package shadows nothing
    assert "site" not in scenarios.shadowing([str(tmp_path / "site")])


FACTORY_APP = '''from flask import Flask
from flask_socketio import SocketIO

socketio = SocketIO()


def create_app():
    app = Flask(__name__)
    socketio.init_app(app, async_mode="threading")
    return app


plain = Flask("plain")
'''


def test_a_factory_returning_the_flask_app_gives_its_socketio(tmp_path, monkeypatch):
    from dispel.model import DispelError
    from dispel.run.scenario_values import AppSpec

    (tmp_path / "factory_app.py").write_text(FACTORY_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    module, sio, flask_app = scenarios.load_socketio(AppSpec("factory_app", "create_app", factory=True))
    assert sio is module.socketio and flask_app.extensions["socketio"] is sio
    with pytest.raises(DispelError, match="import: factory_app:plain is a Flask app without Flask-SocketIO; call socketio.init_app"):
        scenarios.load_socketio(AppSpec("factory_app", "plain"))
    sys.modules.pop("factory_app", None)
