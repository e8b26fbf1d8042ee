from flask import current_app, request
from flask_socketio import (
    ConnectionRefusedError,
    Namespace,
    disconnect,
    emit,
    join_room,
)

from . import store
from .extensions import socketio

_reminder = None


def _remind_forever(app):
    while True:
        socketio.sleep(app.config["REMINDER_SECONDS"])
        socketio.emit("reminder", {"open_boards": len(store.BOARDS)}, namespace="/board")


class BoardNamespace(Namespace):
    def on_connect(self, auth=None):
        global _reminder
        if not auth or auth.get("token") != current_app.config["API_TOKEN"]:
            raise ConnectionRefusedError("bad token")
        if _reminder is None:
            _reminder = socketio.start_background_task(_remind_forever, current_app._get_current_object())
        emit("welcome", {"sid": request.sid})

    def on_open_board(self, data):
        join_room(data["board"])
        emit("board", list(store.BOARDS.get(data["board"], {}).values()))

    def on_move_card(self, data):
        card = store.move_card(data["board"], data["id"], data["column"])
        if card is None:
            return {"ok": False}
        emit("card_moved", card, to=data["board"], include_self=False)
        return {"ok": True}

    def on_leave(self):
        disconnect()

    def on_disconnect(self):
        pass
