"""A plain Flask app with no Socket.IO: the scenario client cannot connect to it."""
from flask import Flask

app = Flask(__name__)


@app.route("/")
def index():
    return "no socket.io here"


def main(port: int) -> None:
    app.run(host="127.0.0.1", port=port)
