from flask import Blueprint, jsonify, request

from . import store
from .extensions import socketio

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.post("/boards/<board>/cards")
def create_card(board):
    card = store.add_card(board, request.json["title"])
    socketio.emit("card_added", card, to=board, namespace="/board")
    return jsonify(card), 201


@bp.get("/healthz")
def healthz():
    return {"ok": True}
