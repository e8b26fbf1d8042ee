"""A live scoreboard: a background task started by the first connection pushes the score to the room every 0.1 s, forever."""
from flask import Flask
from flask_socketio import SocketIO, emit, join_room

app = Flask(__name__)
app.config["SECRET_KEY"] = "scoreboard-secret"
socketio = SocketIO(app, async_mode="threading")

scores = {"home": 0, "away": 0}
thread = None


def push_scores():
    """Runs until the server stops."""
    while True:
        socketio.sleep(0.1)
        scores["home"] += 1
        socketio.emit("score", dict(scores), to="fans")


@socketio.on("connect")
def on_connect():
    global thread
    if thread is None:
        thread = socketio.start_background_task(push_scores)
    emit("welcome", {"fans": "join the room 'fans'"})


@socketio.on("join")
def on_join(room):
    join_room(room)
    emit("joined", room)


if __name__ == "__main__":
    socketio.run(app, debug=True)
