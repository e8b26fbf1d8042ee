"""A small Flask-SocketIO chat app, written as a course project would write it."""
import os

from flask import Flask, render_template, request, send_from_directory
from flask_socketio import SocketIO, emit, join_room

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "change-me-in-production")
# async_mode left to the runner: threading (simple-websocket on threads) or gevent.
socketio = SocketIO(app)


@app.route("/")
def index():
    return render_template("index.html")


@socketio.on("connect")
def on_connect(auth=None):
    emit("welcome", {"sid": request.sid})


@socketio.on("chat")
def on_chat(message):
    emit("reply", {"echo": message})


@socketio.on("join")
def on_join(room):
    join_room(room)
    emit("joined", {"room": room}, to=room)


@socketio.on("shout")
def on_shout(text):
    # Answered through the client's acknowledgement callback.
    return {"upper": text.upper()}


@socketio.on("disconnect")
def on_disconnect(reason=None):
    pass


# The same chat in a browser, with the official Socket.IO client (npm's
# socket.io-client, installed next to this file): the app serves it itself.
@app.route("/chat")
def chat_page():
    return render_template("chat.html")


@app.route("/vendor/socket.io.min.js")
def socketio_client():
    dist = os.path.join(app.root_path, "node_modules", "socket.io-client", "dist")
    # No ETag: werkzeug makes it from the file's mtime and path, which differ per checkout.
    return send_from_directory(dist, "socket.io.min.js", etag=False)


def main(port: int = 5000) -> None:
    socketio.run(app, host="127.0.0.1", port=port, allow_unsafe_werkzeug=True)


if __name__ == "__main__":
    main()
