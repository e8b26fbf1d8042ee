"""`dispel report` on example apps written the way course projects are: a background task that
never ends (forever.py) and an app factory in a src-layout package (shop/). Each is built twice,
from its own folder as a new user would: pages and chains byte-identical, `dispel check --root` passing."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "programs" / "apps"
pytestmark = pytest.mark.slow


def dispel(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dispel", *argv], cwd=cwd, capture_output=True, text=True, timeout=300)


def pages_and_chains(report: Path) -> dict[str, bytes]:
    found = [*(report / "docs").rglob("*.md"), *(report / "traces" / "chains").glob("*.json")]
    return {str(p.relative_to(report)): p.read_bytes() for p in sorted(found)}


def built_twice(tmp: Path, folder: Path, scenario: str) -> tuple[Path, list[str]]:
    said = []
    for out in ("one", "two"):
        proc = dispel("report", "--scenario", scenario, "--out", str(tmp / out), cwd=folder)
        assert proc.returncode == 0, proc.stderr
        said.append(proc.stdout)
    assert pages_and_chains(tmp / "one") == pages_and_chains(tmp / "two"), "regenerating changed a page or a chain"
    check = dispel("check", "--root", str(tmp / "one"), cwd=ROOT)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("0 problem(s)")
    return tmp / "one", said[0].splitlines()


@pytest.fixture(scope="module")
def forever(tmp_path_factory):
    return built_twice(tmp_path_factory.mktemp("forever"), APPS, "forever.toml")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return built_twice(tmp_path_factory.mktemp("shop"), APPS / "shop", "shop.toml")


def test_a_task_that_never_ends_is_cut_and_named_with_its_turns_on_the_console_only(forever):
    report, said = forever
    (running,) = [ln for ln in said if ln.startswith("still running when the scenario ended")]
    task = running.split("forever:push_scores, ")[1]
    assert int(task.split(" iterations")[0]) >= 2, running
    index = (report / "docs" / "index.md").read_text()
    (line,) = [ln for ln in index.splitlines() if ln.startswith("Still running when the scenario ended")]
    assert "(in `forever:push_scores`)" in line and "iterations" not in line
    chain = json.loads((report / "traces" / "chains" / "broadcast-score.json").read_text())
    funcs = [h["func"]["module"] + ":" + h["func"]["qualname"] for h in chain["hops"]]
    assert funcs[0] == "flask_socketio:SocketIO.start_background_task" and "forever:push_scores" in funcs
    assert funcs[-1] == "_socket:socket.send" and "score" in (chain["hops"][-1]["value"] or "")


def test_a_factory_in_a_src_layout_is_the_app_with_every_module_under_its_root(shop):
    report, said = shop
    (app,) = [ln for ln in said if ln.startswith("app: root ")]
    assert app.startswith(f"app: root {APPS / 'shop'}, 4 app modules (shopapp, shopapp.cart, shopapp.events, shopapp.extensions)")
    chains = {p.stem: json.loads(p.read_text()) for p in (report / "traces" / "chains").glob("*.json")}
    # two call sites emit 'cart': one journey each, named by function and line
    assert {"on-add", "on-open_store", "ack-add", "emit-cart-handle_connect-13", "emit-cart-handle_add-26", "connect"} <= set(chains)
    on_add = chains["on-add"]["hops"]
    assert on_add[-1]["func"]["module"] == "shopapp.events" and on_add[-1]["func"]["path"] == "src/shopapp/events.py"
    assert (report / "app" / "src" / "shopapp" / "events.py").read_text() == (APPS / "shop" / "src" / "shopapp" / "events.py").read_text()
    assert "src/shopapp/cart.py" in (report / "docs" / "sample_app.md").read_text()


@pytest.fixture(scope="module")
def taskboard(tmp_path_factory):
    # built once: a long-polling client and a task that never ends make its trace vary from run to
    # run (the README's Limits), and its journeys must be derived in each
    out = tmp_path_factory.mktemp("taskboard") / "report"
    proc = dispel("report", "--scenario", "taskboard.toml", "--out", str(out), "--no-site", cwd=APPS / "taskboard")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout.splitlines()


def test_a_refused_connect_first_and_a_long_polling_recipient_leave_no_journey_underived(taskboard):
    """taskboard/: eve is refused before ann connects, bob polls: the connect journey is ann's (the
    first accepted), the disconnect journey the first DISCONNECT a client sent that completes, and
    the broadcast bob alone receives is followed through Engine.IO's queue to his GET."""
    report, said = taskboard
    chains = {p.stem: json.loads(p.read_text()) for p in (report / "traces" / "chains").glob("*.json")}
    assert {"connect", "disconnect", "connect-refused-board", "broadcast-card_moved-board", "http-create_card"} <= set(chains), sorted(chains)
    missing = [ln for ln in said if ln.startswith("not derived: ")]
    assert not [ln for ln in missing if ln.startswith(("not derived: connect:", "not derived: disconnect:", "not derived: broadcast-card_moved"))]
    assert not [ln for ln in missing if "BoardNamespace.on_disconnect" in ln or "card_moved" in ln], missing
    (line,) = [ln for ln in said if ln.startswith("completeness: ")]
    done, total = (int(n) for n in re.findall(r"\d+", line)[:2])
    assert done == total > 0, line

    def funcs(name: str) -> list[str]:
        return [h["func"]["module"] + ":" + h["func"]["qualname"] for h in chains[name]["hops"]]

    # the CONNECT answer with the accepted client's sid, not the refusal's CONNECT_ERROR
    assert '40/board,{"sid"' in (chains["connect"]["hops"][-1]["value"] or "")
    connects = {n: {h["event"] for h in chains[n]["hops"] if h["func"]["qualname"] == "Server._handle_connect"}
                for n in ("connect", "connect-refused-board")}
    assert connects["connect"] and connects["connect-refused-board"] and not connects["connect"] & connects["connect-refused-board"]
    # the client's DISCONNECT reaches the app's handler (called again without a reason), then the close frames
    assert "taskboard.events:BoardNamespace.on_disconnect" in funcs("disconnect")
    # bob's broadcast: Engine.IO's put, taken by his GET's get (a data hand-off), sent as the body
    moved = chains["broadcast-card_moved-board"]["hops"]
    assert "data" in [h["edge"] for h in moved] and moved[-1]["func"]["qualname"] == "socket.sendall"
    assert moved[-1]["thread"].startswith("request-") and "card_moved" in (moved[-1]["value"] or "")
    # the http step that names no client ran as the file's first client (ann)
    steps = json.loads((report / "traces" / "taskboard.json").read_text())["steps"]
    assert [s for s in steps if s.endswith("-http")] == ["9-bob-http", "11-ann-http"]
    check = dispel("check", "--root", str(report), cwd=ROOT)
    assert check.returncode == 0 and check.stdout.startswith("0 problem(s)"), check.stdout + check.stderr


def test_check_root_compares_the_chains_with_those_derived_from_the_trace(shop, tmp_path):
    import shutil

    report, _ = shop
    copy = tmp_path / "copy"
    shutil.copytree(report, copy)
    path = copy / "traces" / "chains" / "on-add.json"
    chain = json.loads(path.read_text())
    chain["title"] = "a title the trace never gave"
    path.write_text(json.dumps(chain, indent=1))
    check = dispel("check", "--root", str(copy), cwd=ROOT)
    assert check.returncode == 1
    assert "on-add: its chain differs from the one derived from the report's trace" in check.stdout


def test_a_wrapper_module_traces_the_handlers_of_the_package_it_imports(tmp_path):
    # wsgi.py builds the app from the src-layout package: the handlers in src/shopapp/events.py
    # are the app's too, and their journeys are derived.
    proc = dispel("report", "--scenario", "wsgi.toml", "--out", str(tmp_path / "wsgi"), cwd=APPS / "shop")
    assert proc.returncode == 0, proc.stderr
    assert f"app: root {APPS / 'shop'}, 5 app modules (shopapp, shopapp.cart, shopapp.events, shopapp.extensions, wsgi)" in proc.stdout
    chains = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "wsgi" / "traces" / "chains").glob("*.json")}
    assert {"on-add", "ack-add", "emit-cart-handle_add-26"} <= set(chains)
    assert chains["on-add"]["hops"][-1]["func"]["qualname"] == "handle_add"
    funcs = json.loads((tmp_path / "wsgi" / "traces" / "wsgi.json").read_text())["funcs"]
    assert ["wsgi", "<module>", "sample_app", "local", "wsgi.py"] in [f[:5] for f in funcs], "the wrapper is the app's code"


def test_a_handler_that_raises_is_said_on_the_console_with_the_journey_that_shows_it(tmp_path):
    (tmp_path / "chat.py").write_text(
        "from flask import Flask\nfrom flask_socketio import SocketIO\n\napp = Flask(__name__)\n"
        'socketio = SocketIO(app, async_mode="threading")\n\n\n@socketio.on("boom")\ndef on_boom(data):\n'
        '    raise KeyError(data)\n'
    )
    (tmp_path / "chat.toml").write_text('[app]\nimport = "chat:socketio"\n[clients.a]\n[[steps]]\ndo = "connect"\n'
                                        '[[steps]]\ndo = "emit"\nevent = "boom"\ndata = "x"\n[[steps]]\ndo = "disconnect"\n')
    proc = dispel("report", "--scenario", "chat.toml", "--out", str(tmp_path / "out"), "--no-site", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("error in the app: ")]
    assert line == "error in the app: steps[2] (emit 'boom', client a): KeyError: 'x' (raised at chat.py:10 in on_boom); shown by journey on-boom"
