"""A background task started by the first join: it emits a tick to the room every 0.1 s until the room is left."""
from flask import Flask
from flask_socketio import SocketIO, emit, join_room, leave_room

app = Flask(__name__)
socketio = SocketIO(app, async_mode="threading")
ROOM = "ticks"
state = {"task": None, "running": False}


def ticker():
    n = 0
    while state["running"]:
        socketio.sleep(0.1)
        if not state["running"]:
            break
        n += 1
        socketio.emit("tick", {"n": n}, to=ROOM)


@socketio.on("join")
def on_join(room):
    join_room(room)
    if state["task"] is None:
        state["running"] = True
        state["task"] = socketio.start_background_task(ticker)
    return {"joined": room}


@socketio.on("leave")
def on_leave(room):
    state["running"] = False
    leave_room(room)
    emit("left", {"room": room})
