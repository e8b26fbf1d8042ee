"""dispel: trace Flask-SocketIO's real call chains and publish them as a pinned report."""
from .model import Chain, DispelError, Event, Func, Hop, Pin, Source, TraceFile

__all__ = ["Chain", "DispelError", "Event", "Func", "Hop", "Pin", "Source", "TraceFile"]
