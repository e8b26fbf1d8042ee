"""The shop as deployed: a wrapper module that builds the app once; the scenario imports this."""
from shopapp import create_app
from shopapp.extensions import socketio

app = create_app()

if __name__ == "__main__":
    socketio.run(app)
