from flask import Flask

from .config import Config
from .extensions import socketio


def create_app(config=Config):
    app = Flask(__name__)
    app.config.from_object(config)
    from .api import bp
    from .events import BoardNamespace
    app.register_blueprint(bp)
    socketio.on_namespace(BoardNamespace("/board"))
    socketio.init_app(app)
    return app
