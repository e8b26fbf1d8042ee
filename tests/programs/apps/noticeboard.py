"""A notice board: staff post notices over HTTP, students connect with a token and upload files.

Written the way course projects are: the HTTP route broadcasts with socketio.emit, the connect
handler refuses a bad token, and an upload (bytes) is answered with bytes.
"""
from flask import Flask, jsonify, request
from flask_socketio import ConnectionRefusedError, SocketIO, emit

app = Flask(__name__)
app.config["SECRET_KEY"] = "dev"
socketio = SocketIO(app, async_mode="threading")

TOKENS = {"s3cret"}
notices = []


@socketio.on("connect")
def handle_connect(auth):
    if not auth or auth.get("token") not in TOKENS:
        raise ConnectionRefusedError("unauthorized")
    emit("welcome", {"notices": len(notices)})


@app.route("/notices", methods=["POST"])
def post_notice():
    notice = request.get_json()
    notices.append(notice)
    socketio.emit("notice", {"id": len(notices), "text": notice["text"]})
    return jsonify(id=len(notices)), 201


@socketio.on("upload")
def handle_upload(name, blob):
    # bytes in, bytes out: the file is stored and its first bytes sent back as a thumbnail
    emit("uploaded", {"name": name, "size": len(blob), "head": blob[:4]})
