"""The traced sample: a small Flask-SocketIO chat app, as a course project would write it."""
