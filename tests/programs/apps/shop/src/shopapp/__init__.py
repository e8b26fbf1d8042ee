"""The shop's app factory (src layout): the extension is made in extensions.py, the handlers live in events.py."""
from flask import Flask

from .extensions import socketio


def create_app(config=None):
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "change-me"
    app.config.update(config or {})

    from . import events  # noqa: F401 - registers the Socket.IO handlers

    socketio.init_app(app, async_mode="threading")
    return app
