from taskboard import create_app
from taskboard.extensions import socketio

app = create_app()

if __name__ == "__main__":
    socketio.run(app)
