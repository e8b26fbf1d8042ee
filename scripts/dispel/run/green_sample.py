"""The sample app on greenlets (`dispel bench`'s gevent workload): dispel/sample_app/app.py's app and handlers,
served in gevent mode. Import it only in a process that gevent has monkey-patched first (as a gunicorn
gevent worker is). Not the sample app's own file: no journey runs it."""
from flask_socketio import SocketIO

from dispel.sample_app.app import app, main, socketio

__all__ = ["app", "main", "socketio"]

# app.py's handlers were registered on its threading-mode server as they were decorated: a
# gevent-mode server (init_app makes a new one) gets the same handlers.
_threading = socketio.server
SocketIO.init_app(socketio, app, async_mode="gevent")
for _namespace, _handlers in _threading.handlers.items():
    for _event, _handler in _handlers.items():
        socketio.server.on(_event, _handler, namespace=_namespace)
