"""Values as a trace keeps them: stable text for live values (no ports, session ids, times,
paths of this machine or secrets), the secrets to hide, and the codec back to Python.

Secrets: settings named secret (learn_secrets, from installed.FlaskSecrets) and credentials
where apps keep them (redact_credentials: headers, values under secret-sounding keys in
payloads, query strings and forms, URL passwords), hidden in every form they travel in
(``encodings``; masked WebSocket frames too). ``live_secrets`` is the same rule read back:
what `dispel check` reports in a committed file.

Used by the recorder (which types it copies at the call) and by the normalizer alike.
"""
from __future__ import annotations

import ast
import base64
import binascii
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote, unquote_plus

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
        # a secret too short to replace inside other text ("dev") is hidden where it is a whole value
        self._whole = {k: v for k, v in secrets.items() if len(k) < MIN_SECRET}
        subs = sorted(((k, v) for k, v in secrets.items() if len(k) >= MIN_SECRET), key=lambda kv: -len(kv[0]))
        self._subs = [(re.escape(k), v) for k, v in subs]
        self._patterns = [
            *((re.compile(rf"(?<!\d){p}(?!\d)"), label) for p, label in ([(port, "<port>")] if port is not None else []) + sorted(self.ports.items())),
            (re.compile(r"\bt=\d{6,}(\.\d+)?"), "t=<time>"),
            (re.compile(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT"), "<date>"),
            (re.compile(r"\d\d/[A-Z][a-z]{2}/\d{4} \d\d:\d\d:\d\d"), "<date>"),
            *((re.compile(d), "<redacted>") for d in deny),
            *((re.compile(p), repl) for p, repl in patterns),
        ]
        self._secret_re = re.compile("|".join(k for k, _ in self._subs)) if self._subs else None
        self.client_ports: dict[int, str] = {}
        self._texts: dict[tuple[type, object, int], str] = {}  # text() of str and bytes values, as they repeat

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
        # credentials where apps keep them are never the subject of a page
        text = redact_credentials(text)
        for pattern, repl in self._patterns:
            text = pattern.sub(repl, text)
        return text

    def masked_frames(self, data: bytes) -> bytes:
        """Client-to-server WebSocket frames carry their payload masked (XOR with a key the
        frame holds), so a secret in them is not seen by scrub() but is one XOR away: each
        masked frame's payload is unmasked, scrubbed and masked again with its own key (its
        length field following). ``data`` as it is unless it is whole frames and one changed."""
        from ..wire import frame_layout, xor_mask

        out, pos, changed = [], 0, False
        while pos < len(data):
            layout = frame_layout(data[pos:])
            if layout is None or not data[pos + 1] & 0x80 or data[pos] & 0x70:
                return data
            start, length = layout
            end = pos + start + length
            if end > len(data):
                return data
            key = data[pos + start - 4:pos + start]
            payload = xor_mask(data[pos + start:end], key)
            clean = self.scrub(payload.decode("latin-1"))
            if clean != payload.decode("latin-1"):
                payload, changed = clean.encode("latin-1", "replace"), True
                size = len(payload)
                head = bytes([0x80 | size]) if size < 126 else bytes([0xFE]) + size.to_bytes(2, "big") if size < 65536 else bytes([0xFF]) + size.to_bytes(8, "big")
                out.append(data[pos:pos + 1] + head + key + xor_mask(payload, key))
            else:
                out.append(data[pos:end])
            pos = end
        return b"".join(out) if changed else data

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
        if text is None and self._whole:
            as_str = kept.decode("latin-1") if isinstance(kept, bytes) else kept
            whole = self._whole.get(as_str) if isinstance(as_str, str) else None  # a secret is a string
            if whole is not None:
                return repr(whole.encode("latin-1") if isinstance(kept, bytes) else whole)
        if text is None:
            if isinstance(kept, bytes):
                data = kept[:limit]
                if len(data) > 6 and data[1] & 0x80 and not data[0] & 0x70:
                    data = self.masked_frames(data)
                text = "b" + repr(self.scrub(data.decode("latin-1")))
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
# A key whose value is a credential (a payload's "token", a query's api_key, a form's password).
_NAMES = r"secret|password|passwd|token|api[_-]?key|private[_-]?key|access[_-]?key|credential"
_KEY = rf"[\w.-]*?(?:{_NAMES})[\w.-]*"
# Headers that carry credentials (not Access-Control-Allow-Credentials, which says true or false).
_HEADER = r"(?:set-)?cookie|(?:proxy-)?authorization|[\w-]*(?:secret|token|api-?key|password|passwd)[\w-]*"
_CREDENTIAL_HEADER = re.compile(rf"(?im)^({_HEADER}):[ \t]*([^\r\n]*)")
# "key": "value" in JSON or a Python repr (either quote, backslash escapes)
_KEY_VALUE = re.compile(rf"""(?i)(["'])({_KEY})\1(\s*:\s*)(["'])((?:\\.|(?!\4)[^\\\r\n])*)\4""")
# key=value in a query string or a form body: after ? or &, or at the start (_QUERY_FIRST, matched there only)
# (a quote ends the value only where a string would end: werkzeug logs a query half-decoded, "%3D)
_PAIR = rf"""(({_KEY})=)((?:[^&#\s'"<>()\[\]{{}};,]|["'](?=[^&#\s'"<>()\[\]{{}};,:]))+)"""
_QUERY_PAIR = re.compile(rf"(?i)[?&]{_PAIR}")
_QUERY_FIRST = re.compile(rf"(?i){_PAIR}")
# scheme://user:password@host
_URL_PASSWORD = re.compile(r"""://([^/\s:@'"<>]*:)([^@\s/'"<>]+)@""")
PLACEHOLDER = re.compile(r"<[\w@:. -]+>")
# Words one of which any text the patterns match holds, lowercased: a quick test before them
_HINT_WORDS = ("secret", "passw", "token", "api_key", "api-key", "apikey", "private", "access", "credential",
               "cookie", "authorization", "://")


def _hinted(text: str) -> bool:
    low = text.lower()
    return any(word in low for word in _HINT_WORDS)
MIN_SECRET = 4  # shorter secrets are hidden only where they are a whole value: replacing them inside text would wreck it
MIN_FOUND = 6  # nor shorter values found under a secret-sounding key (they are still redacted there)
_NOT_SECRET = frozenset({"true", "false", "null", "none", "undefined"})


def _is_placeholder(value: str) -> bool:
    return not value or PLACEHOLDER.fullmatch(value) is not None


def _key_value(m: re.Match) -> str:
    q, key, sep, vq, value = m.groups()
    return m.group(0) if _is_placeholder(value) else f"{q}{key}{q}{sep}{vq}<secret:{key}>{vq}"


def _query_pair(m: re.Match) -> str:
    start = m.group(0)[: m.start(1) - m.start(0)]  # the ? or &, if any
    return m.group(0) if _is_placeholder(m.group(3)) else f"{start}{m.group(1)}<secret:{m.group(2)}>"


def _query_pairs(text: str) -> list[re.Match]:
    first = _QUERY_FIRST.match(text)
    return ([first] if first else []) + list(_QUERY_PAIR.finditer(text))


def redact_credentials(text: str) -> str:
    """``text`` with every credential where apps keep it replaced by a placeholder: credential
    headers, values under secret-sounding keys (JSON, Python reprs, query strings, forms), URL passwords."""
    if not _hinted(text):
        return text
    text = _CREDENTIAL_HEADER.sub(lambda m: f"{m.group(1)}: <redacted>", text)
    text = _KEY_VALUE.sub(_key_value, text)
    text = _QUERY_PAIR.sub(_query_pair, text)
    first = _QUERY_FIRST.match(text)
    if first:
        text = _query_pair(first) + text[first.end():]
    return _URL_PASSWORD.sub(lambda m: m.group(0) if _is_placeholder(m.group(2)) else f"://{m.group(1)}<redacted>@", text)


def encodings(value: str) -> list[str]:
    """The forms a secret takes where it travels: as it is, its UTF-8 bytes read as Latin-1 (how
    a trace shows bytes), JSON-escaped (ASCII or not), percent-encoded, base64 and repr-escaped."""
    raw = value.encode("utf-8", "surrogatepass")
    forms = [
        value, raw.decode("latin-1"), json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""), quote(value), quote_plus(value), repr(value)[1:-1],
        base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ]
    return [f for f in dict.fromkeys(forms) if len(f) >= MIN_SECRET]


def _decoded_json(text: str, quote_char: str) -> str:
    try:
        return json.loads(f'"{text}"') if quote_char == '"' else ast.literal_eval(f"'{text}'")
    except (ValueError, SyntaxError):
        return text


def _found_in(text: str) -> list[tuple[str, str, int]]:
    """(secret, label, least length to learn it) of each credential ``text`` holds: a
    credential header's value (with a Bearer's token, a Basic's user:password and password, a
    cookie's values), values under secret-sounding keys (raw and decoded), URL passwords."""
    out: list[tuple[str, str, int]] = []
    for m in _CREDENTIAL_HEADER.finditer(text):
        header, value = m.group(1).lower(), m.group(2).strip()
        out.append((value, "<redacted>", MIN_SECRET))  # the header's whole value
        parts: list[str] = []
        scheme, _, rest = value.partition(" ")
        if scheme.lower() == "basic" and rest:
            try:
                pair = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                pair = ""
            parts += [pair, pair.partition(":")[2]]
        elif rest:
            parts.append(rest.strip())  # Bearer TOKEN, Token TOKEN ...
        if header in ("cookie", "set-cookie"):
            cookies = value.split(";")[:1] if header == "set-cookie" else value.split(";")
            parts += [c.partition("=")[2].strip() for c in cookies]
        out += [(part, "<redacted>", MIN_FOUND) for part in parts]
    for m in _KEY_VALUE.finditer(text):
        label = f"<secret:{m.group(2)}>"
        out += [(v, label, MIN_FOUND) for v in (m.group(5), _decoded_json(m.group(5), m.group(4)))]
    for m in _query_pairs(text):
        label = f"<secret:{m.group(2)}>"
        out += [(v, label, MIN_FOUND) for v in (m.group(3), unquote(m.group(3)), unquote_plus(m.group(3)))]
    for m in _URL_PASSWORD.finditer(text):
        out += [(v, "<redacted>", MIN_FOUND) for v in (m.group(2), unquote(m.group(2)))]
    return out


def learn_secrets(values: Iterable[object], named: dict[str, object] | Iterable[tuple[str, object]]) -> dict[str, str]:
    """Secret literals -> placeholders, so they are scrubbed wherever they show up, in every
    form they travel in (``encodings``).

    ``named``: setting names and values (every Flask config the run made, as pairs or a dict):
    those whose name says secret are learned (a list's items too: SECRET_KEY_FALLBACKS).
    Credentials seen in any value are learned too (redact_credentials's: a cookie, an
    authorization header, a payload's or a query's token), so that they are also hidden
    where they travel alone.
    """
    out: dict[str, str] = {}

    def learn(value: str, label: str, least: int) -> None:
        if len(value) >= least and not _is_placeholder(value) and value.lower() not in _NOT_SECRET:
            for form in encodings(value):
                out.setdefault(form, label)

    pairs = sorted(named.items()) if isinstance(named, dict) else list(named)
    for name, value in pairs:
        if not SECRET_NAME.search(name):
            continue
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, (str, bytes)):
                text = item.decode("latin-1") if isinstance(item, bytes) else item
                if 0 < len(text) < MIN_SECRET and text.lower() not in _NOT_SECRET:
                    out.setdefault(text, f"<secret:{name}>")  # hidden only as a whole value (Normalizer)
                else:
                    learn(text, f"<secret:{name}>", MIN_SECRET)
    seen: set[str] = set()
    for value in values:
        if isinstance(value, (str, bytes)):
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            if text in seen or not _hinted(text):
                continue
            seen.add(text)
            for secret, label, least in _found_in(text):
                learn(secret, label, least)
    return out


# What `dispel check` reports as a live secret in a committed file.
SECRET_KEY_FUNC = "flask.config:ConfigAttribute.__get__"  # returns app.secret_key (the only str ConfigAttribute)


def unredacted_keys(text: str) -> list[str]:
    """The secret-sounding keys and credential headers in ``text`` whose value is not a placeholder."""
    if not _hinted(text):
        return []
    found = []
    for m in _CREDENTIAL_HEADER.finditer(text):
        if not _is_placeholder(m.group(2).strip()):
            found.append(m.group(1))
    if ":" in text:
        found += [m.group(2) for m in _KEY_VALUE.finditer(text) if not _is_placeholder(m.group(5))]
    if "=" in text:
        found += [m.group(2) for m in _query_pairs(text) if not _is_placeholder(m.group(3))]
    found += ["a URL's password" for m in _URL_PASSWORD.finditer(text) if not _is_placeholder(m.group(2))]
    return found


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _texts_in(text: str):
    """Every string of a JSON document (one value per line, as dispel writes them) that may
    hold a credential, Python literals (a trace's value texts) decoded too."""
    lower = text.lower()
    lines: dict[int, str] = {}
    for word in _HINT_WORDS:  # str.find: much faster than the regex over a whole trace
        at = lower.find(word)
        while at >= 0:
            start = text.rfind("\n", 0, at) + 1
            end = text.find("\n", at)
            end = end if end >= 0 else len(text)
            lines.setdefault(start, text[start:end])
            at = lower.find(word, end)
    seen: set[str] = set()
    for _, line in sorted(lines.items()):
        for m in _JSON_STRING.finditer(line):
            if m.group(0) in seen:
                continue
            seen.add(m.group(0))
            item = json.loads(m.group(0))
            if not _hinted(item):
                continue
            yield item
            if item[:2] in ("b'", 'b"') or item[:1] in "'\"":
                try:
                    value = value_text_to_python(item)
                except (ValueError, SyntaxError):
                    continue
                yield value.decode("latin-1") if isinstance(value, bytes) else str(value)


def live_secrets(text: str, is_json: bool) -> list[str]:
    """What in a committed trace, chain or page looks like a live secret, as key names only
    (never the value): ``secret_key`` for a clear string a trace shows Flask's
    ``ConfigAttribute.__get__`` returning, and every secret-sounding key or credential header
    whose value is not a placeholder. Sorted, each once."""
    found: set[str] = set()
    if not is_json:
        found.update(unredacted_keys(text))
        found.update(unredacted_keys(text.replace('\\"', '"').replace("\\'", "'").replace("\\r\\n", "\n").replace("\\n", "\n")))
        return sorted(found)
    for item in _texts_in(text):
        found.update(unredacted_keys(item))
    if "ConfigAttribute" not in text:
        return sorted(found)
    data = json.loads(text)
    if isinstance(data, dict) and isinstance(data.get("funcs"), list) and isinstance(data.get("events"), list):
        # a trace file: funcs are [module, qualname, ...], events [.., .., .., func, .., args, [ret, token], ..]
        getter = {i for i, f in enumerate(data["funcs"]) if isinstance(f, list) and f[:2] == SECRET_KEY_FUNC.split(":")}
        for e in data["events"]:
            ret = e[6] if isinstance(e, list) and len(e) > 6 and e[3] in getter else None
            if ret and _secret_text(ret[0]):
                found.add("secret_key")
    for hop in data.get("hops", ()) if isinstance(data, dict) else ():
        func = hop.get("func") or {}
        if f"{func.get('module')}:{func.get('qualname')}" == SECRET_KEY_FUNC and _secret_text(hop.get("value") or ""):
            found.add("secret_key")
    return sorted(found)


def _secret_text(text: str) -> bool:
    """A value text (Normalizer.text) holding a clear string, not a placeholder."""
    if not (text[:1] in "'\"" or text[:2] in ("b'", 'b"')):
        return False
    value = value_text_to_python(text)
    value = value.decode("latin-1") if isinstance(value, bytes) else value
    return not _is_placeholder(value)


def value_text_to_python(text: str) -> str | bytes:
    """Undo Normalizer.text for str and bytes values (used to decode wire bytes)."""
    if text.startswith(("b'", 'b"')):
        return ast.literal_eval(text[1:]).encode("latin-1")
    if text[:1] in "'\"":
        return ast.literal_eval(text)  # a str: Normalizer.text quotes only strings
    return text


def bytes_of(text: str) -> bytes | None:
    """The bytes a value text ``b'...'`` stands for; None for any other value (the one way a
    value's text becomes bytes: chains, joins and placeholders all read sockets' data with it)."""
    if not text.startswith(("b'", 'b"')):
        return None
    try:
        value = value_text_to_python(text)
    except (ValueError, SyntaxError, UnicodeEncodeError):
        return None
    return value if isinstance(value, bytes) else None



def wire_bytes(text: str) -> bytes:
    """The bytes of a socket's read or write (bytes_of, for a text that must be bytes: TypeError otherwise)."""
    data = bytes_of(text)
    if data is None:
        raise TypeError(f"not the text of a bytes value: {text[:40]!r}")
    return data