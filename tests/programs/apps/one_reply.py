"""Every answer goes out as the same event, 'reply', the way many course projects write it;
one handler first asks the client (socketio.call) and replies with what it answered; one sends
its reply with a callback, which answers again when the client's ack arrives; one raises."""
from flask import Flask, request
from flask_socketio import SocketIO, emit, join_room

app = Flask(__name__)
socketio = SocketIO(app, async_mode="threading")


@socketio.on("hello")
def on_hello(name):
    emit("reply", {"text": f"hello {name}"})


@socketio.on("join")
def on_join(room):
    join_room(room)
    emit("reply", {"text": f"joined {room}"})
    emit("reply", {"text": "someone joined"}, to=room, include_self=False)


@socketio.on("ask")
def on_ask(question):
    answer = socketio.call("quiz", {"q": question}, to=request.sid, timeout=5)
    emit("reply", {"text": f"you answered {answer}"})


@socketio.on("bye")
def on_bye():
    sid = request.sid

    def acked(*answer):
        socketio.emit("reply", {"text": "got your ack"}, to=sid)

    emit("reply", {"text": "bye then"}, callback=acked)


@socketio.on("oops")
def on_oops(data):
    return {"half": data["amount"] / 2}


@socketio.on("echo")
def on_echo(text):
    emit("reply", {"text": "echoing"})
    return {"echo": text}
