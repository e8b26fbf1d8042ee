"""A quiz: the server asks the client a question and waits for its answer (socketio.call),
then ends the session itself (disconnect()), or once the client has acknowledged its score.
"""
from flask import Flask, copy_current_request_context, request
from flask_socketio import SocketIO, disconnect, emit

app = Flask(__name__)
socketio = SocketIO(app, async_mode="threading")

QUESTION = {"q": "What is 6 x 7?"}


@socketio.on("start")
def start_quiz(player):
    answer = socketio.call("question", QUESTION, to=request.sid, timeout=5)
    emit("result", {"player": player, "correct": answer == "42"})


@socketio.on("quit")
def quit_quiz():
    emit("bye", {"reason": "quit"})
    disconnect()


@socketio.on("finish")
def finish_quiz(player):
    @copy_current_request_context
    def score_seen(*args):
        disconnect()

    emit("score", {"player": player, "score": 1}, callback=score_seen)
