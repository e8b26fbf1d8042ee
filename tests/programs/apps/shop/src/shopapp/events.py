from flask import request
from flask_socketio import emit, join_room

from .cart import add_item
from .extensions import socketio

carts = {}


@socketio.on("connect")
def handle_connect():
    carts[request.sid] = {}
    emit("cart", {"items": {}, "total": 0})


@socketio.on("open_store")
def open_store(store):
    join_room(store)
    emit("store_opened", {"store": store}, to=store)


@socketio.on("add")
def handle_add(data):
    cart = carts.setdefault(request.sid, {})
    total = add_item(cart, data["item"], data.get("qty", 1))
    emit("cart", {"items": cart, "total": total})
    return total


@socketio.on("disconnect")
def handle_disconnect(*args):
    carts.pop(request.sid, None)
