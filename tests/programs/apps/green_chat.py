"""ns_chat.py on greenlets (async_mode="gevent", served as a gunicorn gevent worker would: the
process monkey-patched first). A chat on /chat written as a class-based Namespace: send() echoes; a catch-all on the
default namespace answers any event there (on /chat itself it would shadow the class's
on_<event> methods: python-socketio looks up function handlers, '*' included, first)."""
from flask import Flask
from flask_socketio import Namespace, SocketIO, emit, send

app = Flask(__name__)
app.config["SECRET_KEY"] = "example-not-secret"
socketio = SocketIO(app, async_mode="gevent")


class ChatNamespace(Namespace):
    def on_connect(self, auth=None):
        emit("hello", {"namespace": "/chat"})

    def on_message(self, text):
        send(f"echo: {text}")

    def on_disconnect(self, reason=None):
        pass


socketio.on_namespace(ChatNamespace("/chat"))


@socketio.on("*")
def anything_else(event, data):
    emit("seen", {"event": event, "data": data})
