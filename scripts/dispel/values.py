"""Values as a trace keeps them: stable text for live values (no ports, session ids, times,
paths of this machine or secrets), the secrets to hide, and the codec back to Python.

Used by the recorder (which types it copies at the call) and by the normalizer alike.
"""
from __future__ import annotations

import ast
import re
from typing import Iterable

# Values of these types are rendered as they are; others by their type (and
# size), since a mutable object's later state is not what the program saw.
IMMUTABLE = (str, bytes, int, float, bool, type(None))

# Argument names and function names that carry file descriptors.
FD_NAMES = frozenset({"fd", "fileno"})
_FD_FUNC = re.compile(r"(fd|fileno)\b|_fd$|_fileobj_lookup$")


class Normalizer:
    """Turns live values into stable text: no ports, session ids, times or addresses."""

    def __init__(
        self, port: int | None, secrets: dict[str, str], paths: dict[str, str] | None = None, deny: tuple[str, ...] = (),
        ports: dict[int, str] | None = None, patterns: tuple[tuple[str, str], ...] = (),
    ) -> None:
        # port None: a process that serves nothing; ``ports``: other known ports -> their
        # placeholders; ``patterns``: more (regex, replacement) pairs, such as a protocol's ids
        self.port = port
        self.ports = dict(ports or {})
        # literal -> placeholder (session ids, this machine's folders), longest first
        self.secrets = {**(paths or {}), **secrets}
        secrets = self.secrets
        subs = sorted(secrets.items(), key=lambda kv: -len(kv[0]))
        self._subs = [(re.escape(k), v) for k, v in subs]
        self._patterns = [
            *((re.compile(rf"(?<!\d){p}(?!\d)"), label) for p, label in ([(port, "<port>")] if port is not None else []) + sorted(self.ports.items())),
            (re.compile(r"\bt=\d{6,}(\.\d+)?"), "t=<time>"),
            (re.compile(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT"), "<date>"),
            (re.compile(r"\d\d/[A-Z][a-z]{2}/\d{4} \d\d:\d\d:\d\d"), "<date>"),
            # credentials in HTTP headers are never the subject of a page
            (re.compile(r"(?im)^((?:set-)?cookie|(?:proxy-)?authorization):[ \t]*[^\r\n]*"), r"\1: <redacted>"),
            *((re.compile(d), "<redacted>") for d in deny),
            *((re.compile(p), repl) for p, repl in patterns),
        ]
        self._secret_re = re.compile("|".join(k for k, _ in self._subs)) if self._subs else None
        self.client_ports: dict[int, str] = {}
        self._texts: dict[tuple[type, object], str] = {}  # text() of str and bytes values, as they repeat

    def learn_client_port(self, port: int) -> None:
        """A peer's ephemeral port (from an accept): replaced wherever it shows."""
        if port not in self.client_ports:
            label = f"<client-port-{len(self.client_ports) + 1}>"
            self.client_ports[port] = label
            self._patterns.append((re.compile(rf"(?<!\d){port}(?!\d)"), label))
            self._texts.clear()

    def scrub(self, text: str) -> str:
        if self._secret_re is not None:
            text = self._secret_re.sub(lambda m: self.secrets[m.group(0)], text)
        for pattern, repl in self._patterns:
            text = pattern.sub(repl, text)
        return text

    def value(self, func: str, name: str, kept: object) -> str:
        """Like text, knowing whose value it is: file descriptors are numbered by the OS as it pleases."""
        if type(kept) is int and (name in FD_NAMES or (name == "return" and _FD_FUNC.search(func))):
            return "<fd>"
        return self.text(kept)

    def text(self, kept: object, limit: int = 4096) -> str:
        """Stable text for a value: immutable ones as they are, others by type."""
        if type(kept) not in IMMUTABLE:
            # Only the type: a mutable object's state now is not what the program saw.
            return f"<{type(kept).__name__}>"
        if isinstance(kept, bool) or kept is None:
            return repr(kept)
        if isinstance(kept, int):
            if kept == self.port:
                return "<port>"
            if kept in self.ports:
                return self.ports[kept]
            if kept in self.client_ports:
                return self.client_ports[kept]
            return repr(kept) if abs(kept) < 2**31 else "<int>"
        if isinstance(kept, float):
            # Durations computed from the clock differ run to run; round ones are settings.
            return repr(kept) if kept * 8 == int(kept * 8) and abs(kept) < 1e6 else "<float>"
        key = (type(kept), kept, limit)
        text = self._texts.get(key)
        if text is None:
            if isinstance(kept, bytes):
                text = "b" + repr(self.scrub(kept[:limit].decode("latin-1")))
            else:
                text = repr(self.scrub(str(kept)[:limit]))
            self._texts[key] = text
        return text


# The browser's identity, a named normalisation of exactly the texts it changes: the
# User-Agent's product token and the client hints' brand list (whose GREASE brand changes
# with the major version too). Debian updates Chromium often, so a trace keeps placeholders
# here; the version itself is the trace's metadata (``versions["chromium"]``).
BROWSER_IDENTITY: tuple[tuple[str, str], ...] = (
    (r"\b((?:Headless)?Chrome)/\d+(?:\.\d+)*", r"\1/<chromium>"),
    (r'"[^"\r\n]*";v="[\d.]+"(?:, ?"[^"\r\n]*";v="[\d.]+")*', "<chromium-brands>"),
)


SECRET_NAME = re.compile(r"(?i)secret|password|passwd|token|api_?key|private_?key|credential")
_CREDENTIAL_HEADER = re.compile(r"(?im)^(?:(?:set-)?cookie|(?:proxy-)?authorization):[ \t]*([^\r\n]+)")


def learn_secrets(values: Iterable[object], named: dict[str, object]) -> dict[str, str]:
    """Secret literals -> placeholders, so they are scrubbed wherever they show up.

    ``named`` maps setting names to values (an app's config): those whose name
    says secret are learned. Credential headers seen in any value are learned
    too, so that a cookie's value is also hidden where it travels alone.
    """
    out: dict[str, str] = {}
    for name, value in sorted(named.items()):
        if SECRET_NAME.search(name) and isinstance(value, (str, bytes)) and len(value) >= 4:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            out.setdefault(text, f"<secret:{name}>")
    for value in values:
        if isinstance(value, (str, bytes)):
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            for m in _CREDENTIAL_HEADER.finditer(text):
                out.setdefault(m.group(1).strip(), "<redacted>")
    return out


def value_text_to_python(text: str) -> object:
    """Undo Normalizer.text for str and bytes values (used to decode wire bytes)."""
    if text.startswith("b'") or text.startswith('b"'):
        return ast.literal_eval(text[1:]).encode("latin-1")
    if text[:1] in "'\"":
        return ast.literal_eval(text)
    return text
