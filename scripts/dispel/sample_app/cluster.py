"""The chat app as one of several servers behind a load balancer, joined by a message queue.

The same Flask app and handlers as app.py, served by a SocketIO made with ``message_queue``
(its client manager is then a RedisManager). app.py itself stays a single server.
"""
from flask_socketio import SocketIO

from dispel.sample_app import app as chat

socketio = None


def main(port: int, message_queue: str) -> None:
    global socketio
    socketio = SocketIO(chat.app, async_mode="threading", message_queue=message_queue)
    for event, handler in (
        ("connect", chat.on_connect),
        ("chat", chat.on_chat),
        ("join", chat.on_join),
        ("shout", chat.on_shout),
        ("disconnect", chat.on_disconnect),
    ):
        socketio.on(event)(handler)
    socketio.run(chat.app, host="127.0.0.1", port=port, allow_unsafe_werkzeug=True)
