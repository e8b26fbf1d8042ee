"""A process that is not a Socket.IO server (a cron script, a Celery worker) emitting to the
chat's clients through the message queue, as Flask-SocketIO's documentation shows: a SocketIO
made with no app and a message_queue only writes to the queue."""
from flask_socketio import SocketIO

socketio = None


def main(message_queue: str) -> None:
    global socketio
    socketio = SocketIO(message_queue=message_queue)
    socketio.emit("news", {"text": "from a worker"})
