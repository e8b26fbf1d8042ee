"""Hand-written annotations: parse the YAML files, fingerprint functions, find missing/orphaned/stale prose."""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import yaml

from ..model import Chain, DispelError, Func, Source, source_lines

JOURNEY_PREFIX = "journey:"
FINGERPRINT_RE = re.compile(r"[0-9a-f]{12}")
# module:qualname, e.g. engineio.socket:Socket.send or flask_socketio:SocketIO.on.<locals>.decorator;
# @line after it: overloaded qualnames (Func.key). Then, optionally, the context the text is written
# for: @journey (one journey), @journey#L<n> (the hops of that journey whose executed line is n).
KEY_RE = re.compile(r"(?P<func>[A-Za-z_][\w.]*:[\w.<>]+(?:@\d+)?)(?:@(?P<journey>[a-z][a-z0-9-]*)(?:#L(?P<line>\d+))?)?")
FIELDS = {"fingerprint", "key", "reviewed", "short", "text"}
SHORT_MARK = "short:"  # texts() gives an annotation's `short:` sentence (the hand-in's) as "short:<its key>"
KEY_MARK = "key:"  # texts() marks a function whose annotation says `key: true` as "key:<module:qualname>"
T = TypeVar("T")
JOURNEY_NAME_RE = re.compile(r"[a-z][a-z0-9-]*")


@dataclass(frozen=True)
class Annotation:
    key: str  # "module:qualname", "module:qualname@journey[#L<line>]" or "journey:<name>"
    text: str  # Markdown, with {{placeholders}} (see placeholders.py)
    fingerprint: str  # "" for journey intros and C functions (no source to fingerprint)
    file: str
    line: int  # where the key stands in the file (1-based)
    reviewed: tuple[str, ...] = ()  # journeys a general text was read against (a keyed text: its own)
    key_hop: bool = False  # `key: true`: this function's hops are key hops, never folded
    short: str = ""  # `short:` one sentence for the hand-in (dispel handin); the same placeholders and prose rules

    @property
    def func_key(self) -> str:
        """The function the text is about (Func.key), without its context."""
        return split_key(self.key)[0]

    @property
    def journey(self) -> str | None:
        """The journey the text is keyed to, None for a general text."""
        return split_key(self.key)[1]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Problem:
    kind: str  # "missing", "orphaned", "stale" or "unreviewed"
    key: str
    where: str  # file:line of the annotation, or the journeys/hops the function is on
    message: str


# --------------------------------------------------------------------------- fingerprints


def fingerprint(text: str | bytes, first_line: int, last_line: int) -> str:
    """First 12 hex digits of the SHA-1 of lines ``first_line..last_line`` (1-based, inclusive), as bytes."""
    lines = source_lines(text)
    if first_line < 1 or last_line < first_line or last_line > len(lines):
        raise DispelError(f"lines {first_line}-{last_line} are not inside a {len(lines)}-line file")
    return hashlib.sha1(b"".join(lines[first_line - 1 : last_line])).hexdigest()[:12]


def func_fingerprint(func: Func, sources: Mapping[Source, str | bytes]) -> str | None:
    """The current fingerprint of ``func``, or None when it has no source (C code, unreadable file)."""
    if func.is_c or func.source not in sources:
        return None
    return fingerprint(sources[func.source], func.first_line, max(func.first_line, func.last_line))


# --------------------------------------------------------------------------- parsing


def _fail(file: str, node: yaml.Node, message: str) -> DispelError:
    return DispelError(f"{file}:{node.start_mark.line + 1}: {message}")


def _scalar(file: str, node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise _fail(file, node, f"{what} must be a string")
    return str(node.value)


def split_key(key: str) -> tuple[str, str | None, int | None]:
    """``module:qualname[@line][@journey[#L<n>]]`` -> (Func.key, journey or None, executed line or None)."""
    m = KEY_RE.fullmatch(key)
    if m is None or key.startswith(JOURNEY_PREFIX):
        return key, None, None
    return m.group("func"), m.group("journey"), int(m.group("line")) if m.group("line") else None


def select(texts: Mapping[str, T], func_key: str, journey: str, line: int) -> tuple[str, T] | None:
    """The most specific text for a hop: ``key@journey#L<line>``, else ``key@journey``, else ``key``."""
    for key in (f"{func_key}@{journey}#L{line}", f"{func_key}@{journey}", func_key):
        if key in texts:
            return key, texts[key]
    return None


def _reviewed(file: str, key: str, node: yaml.Node) -> tuple[str, ...]:
    """``reviewed: [on, emit]``: the journeys a text was read against."""
    if not isinstance(node, yaml.SequenceNode):
        raise _fail(file, node, f"{key}: reviewed must be a list of journeys, e.g. [on, emit]")
    names = tuple(_scalar(file, n, f"{key}: reviewed") for n in node.value)
    for name in names:
        if not JOURNEY_NAME_RE.fullmatch(name):
            raise _fail(file, node, f"{key}: {name!r} in reviewed is not a journey name")
    return names


def parse_annotations(text: str, file: str) -> dict[str, Annotation]:
    """One annotations file -> {key: Annotation}. Any mistake is a DispelError naming file and line.

    Format::

        journey:emit:
          text: |
            Markdown …
        engineio.socket:Socket.send:
          fingerprint: 0123456789ab
          reviewed: [on, emit]
          text: |
            Markdown …
        engineio.socket:Socket.send@upgrade:
          fingerprint: 0123456789ab
          text: |
            Markdown true on the upgrade journey only …
    """
    try:
        # compose, not load: the node tree keeps line numbers and shows duplicate keys,
        # which a plain load would silently merge.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise DispelError(f"{file}:{line}: not valid YAML: {problem}") from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise _fail(file, root, "an annotations file must be a mapping of module:qualname to {fingerprint, text}")
    out: dict[str, Annotation] = {}
    for key_node, value_node in root.value:
        key = _scalar(file, key_node, "a key")
        if key in out:
            raise _fail(file, key_node, f"{key!r} is annotated twice (first at line {out[key].line})")
        is_journey = key.startswith(JOURNEY_PREFIX)
        if not is_journey and not KEY_RE.fullmatch(key):
            raise _fail(file, key_node, f"{key!r} is not a function identity module:qualname nor journey:<name>")
        if not isinstance(value_node, yaml.MappingNode):
            raise _fail(file, value_node, f"{key}: expected a mapping with 'text' (and 'fingerprint')")
        fields: dict[str, str] = {}
        reviewed: tuple[str, ...] = ()
        for f_node, v_node in value_node.value:
            name = _scalar(file, f_node, "a field name")
            if name not in FIELDS:
                raise _fail(file, f_node, f"{key}: unknown field {name!r} (expected: {', '.join(sorted(FIELDS))})")
            if name == "reviewed":
                reviewed = _reviewed(file, key, v_node)
                continue
            fields[name] = _scalar(file, v_node, f"{key}: {name}")
        if not fields.get("text", "").strip():
            raise _fail(file, key_node, f"{key}: 'text' is missing or empty")
        fp = fields.get("fingerprint", "")
        if fp and not FINGERPRINT_RE.fullmatch(fp):
            raise _fail(file, key_node, f"{key}: fingerprint {fp!r} is not 12 lowercase hex digits")
        if is_journey and (fp or reviewed):
            raise _fail(file, key_node, f"{key}: a journey summary has no fingerprint nor reviewed list")
        if reviewed and split_key(key)[1]:
            raise _fail(file, key_node, f"{key}: a text keyed to a journey is reviewed on that journey only; drop 'reviewed'")
        if fields.get("key", "true") not in ("true", "false"):
            raise _fail(file, key_node, f"{key}: key must be true or false, not {fields['key']!r}")
        short = fields.get("short", "").strip()
        if short and is_journey:
            raise _fail(file, key_node, f"{key}: a journey summary has no short sentence; drop 'short'")
        if "\n\n" in short:
            raise _fail(file, key_node, f"{key}: short must be one sentence, without a blank line")
        out[key] = Annotation(key, fields["text"], fp, file, key_node.start_mark.line + 1, reviewed, fields.get("key") == "true", short)
    return out


def merge_annotations(files: Iterable[tuple[str, str]]) -> dict[str, Annotation]:
    """All annotations files (name, text) -> one mapping; a key in two files is an error."""
    merged: dict[str, Annotation] = {}
    for file, text in files:
        for key, ann in parse_annotations(text, file).items():
            if key in merged:
                raise DispelError(f"{ann.where}: {key!r} is already annotated at {merged[key].where}")
            merged[key] = ann
    return merged


def texts(annotations: Mapping[str, Annotation]) -> dict[str, str]:
    """The key -> Markdown mapping that render takes; ``key:<module:qualname>`` for a hop marked key."""
    out = {key: ann.text for key, ann in annotations.items()}
    out.update({KEY_MARK + ann.func_key: "" for ann in annotations.values() if ann.key_hop})
    out.update({SHORT_MARK + key: ann.short for key, ann in annotations.items() if ann.short})
    return out


# --------------------------------------------------------------------------- reports


def chain_funcs(chains: Iterable[Chain]) -> dict[str, tuple[Func, list[str]]]:
    """Every function on the chains -> (Func, ["journey#hop", …]) in first-seen order."""
    out: dict[str, tuple[Func, list[str]]] = {}
    for chain in chains:
        for i, hop in enumerate(chain.hops, 1):
            out.setdefault(hop.func.key, (hop.func, []))[1].append(f"{chain.journey}#{i}")
    return out


def missing(chains: Iterable[Chain], annotations: Mapping[str, Annotation]) -> list[Problem]:
    """Journeys without a summary and hops that no text (general or keyed to their journey) covers."""
    chains = list(chains)
    out = [
        Problem("missing", f"{JOURNEY_PREFIX}{c.journey}", c.journey, f"journey {c.journey!r} has no summary")
        for c in chains
        if f"{JOURNEY_PREFIX}{c.journey}" not in annotations
    ]
    uncovered: dict[str, list[str]] = {}
    for chain in chains:
        for i, hop in enumerate(chain.hops, 1):
            if select(annotations, hop.func.key, chain.journey, hop.line) is None:
                uncovered.setdefault(hop.func.key, []).append(f"{chain.journey}#{i}")
    for key, places in uncovered.items():
        out.append(Problem("missing", key, ", ".join(places), f"{key} (hop {', '.join(places)}) has no annotation"))
    return out


def orphaned(
    chains: Iterable[Chain], annotations: Mapping[str, Annotation], journeys: Iterable[str] = ()
) -> list[Problem]:
    """Annotations whose function is on no chain (or not on the journey, or never at the line, they are keyed to),
    or whose journey is unknown.

    ``journeys`` names journeys that exist even if not recorded yet, so their summaries
    are not reported while a chain is missing.
    """
    chains = list(chains)
    known = chain_funcs(chains)
    names = {c.journey for c in chains} | set(journeys)
    hops_at = {(c.journey, h.func.key, h.line) for c in chains for h in c.hops}
    on_journey = {(j, key) for j, key, _ in hops_at}
    out = []
    for key, ann in sorted(annotations.items(), key=lambda kv: (kv[1].file, kv[1].line)):
        if key.startswith(JOURNEY_PREFIX):
            if key[len(JOURNEY_PREFIX) :] not in names:
                out.append(Problem("orphaned", key, ann.where, f"{ann.where}: {key} is not a journey"))
            continue
        func_key, journey, line = split_key(key)
        if func_key not in known:
            out.append(Problem("orphaned", key, ann.where, f"{ann.where}: {key} is not on any chain"))
        elif journey is not None and (journey, func_key) not in on_journey:
            out.append(Problem("orphaned", key, ann.where, f"{ann.where}: {key}: {func_key} is not on journey {journey!r}"))
        elif line is not None and (journey, func_key, line) not in hops_at:
            out.append(Problem("orphaned", key, ann.where, f"{ann.where}: {key}: no hop of {func_key} on {journey!r} executes line {line}"))
    return out


def stale(
    chains: Iterable[Chain], annotations: Mapping[str, Annotation], sources: Mapping[Source, str | bytes]
) -> list[Problem]:
    """Annotations written for another version of their function's source (fingerprints differ)."""
    funcs = chain_funcs(chains)
    out = []
    for key, ann in annotations.items():
        if key.startswith(JOURNEY_PREFIX) or ann.func_key not in funcs:
            continue
        current = func_fingerprint(funcs[ann.func_key][0], sources)
        if current is None or ann.fingerprint == current:
            continue
        was = ann.fingerprint or "none"
        out.append(
            Problem(
                "stale",
                key,
                ann.where,
                f"{ann.where}: {key} changed since it was annotated (fingerprint {was}, now {current}); "
                "re-read the code, update the text, then the fingerprint",
            )
        )
    return out


def unreviewed(chains: Iterable[Chain], annotations: Mapping[str, Annotation]) -> list[Problem]:
    """General texts shown on a journey they were not reviewed on (not in their ``reviewed`` list).

    A text keyed to a journey is reviewed there by being written for it. An author confirms a
    general text on a new journey by reading it against that journey's hops (the linked lines,
    the trace around them) and adding the journey to ``reviewed``, or by writing a keyed text.
    """
    seen: dict[tuple[str, str], list[str]] = {}
    for chain in chains:
        for i, hop in enumerate(chain.hops, 1):
            found = select(annotations, hop.func.key, chain.journey, hop.line)
            if found is None or found[1].journey is not None or chain.journey in found[1].reviewed:
                continue
            seen.setdefault((found[0], chain.journey), []).append(str(i))
    out = []
    for (key, journey), hops in seen.items():
        ann = annotations[key]
        out.append(
            Problem(
                "unreviewed",
                key,
                ann.where,
                f"{ann.where}: {key} is unreviewed on {journey} (hop {', '.join(hops)}); read it against those hops, "
                f"then add {journey} to its reviewed list or write {key}@{journey}",
            )
        )
    return out


def stub(func: Func, sources: Mapping[Source, str | bytes]) -> str:
    """A YAML entry to paste into an annotations file for an unannotated function."""
    fp = func_fingerprint(func, sources)
    head = f"{func.key}:\n" + (f"  fingerprint: {fp}\n" if fp else "")
    return head + "  text: |\n    TODO: what this function does on this journey, from reading its code.\n"


# --------------------------------------------------------------------------- the sample's values in general texts

# A general text (``module:qualname``, no ``@journey``) is shown on every app's pages, so it
# must not name what only the sample app does. The vocabulary of what the sample does is
# computed from its committed chains, never typed: the event names, rooms and ack/payload
# strings of the Socket.IO EVENT/ACK packets on its wire and in its hops' values (and of the
# message-queue messages between its servers), and the names of its own functions -- plus the
# phrases "sample app" and "this site", which name the sample itself.
#
# How a term is matched decides the false positives:
#   * a term with a character other than a letter (`on_shout`, `room-1`, `from a worker`,
#     `<b>hi</b>`) cannot be an English or protocol word: it is matched wherever it stands;
#   * a term of letters only (`chat`, `reply`, `joined`, `HELLO`, `upper`) may also be an
#     ordinary word ("a reply", "the room has joined"): it is matched only as a literal, quoted
#     ('chat', "chat") or as a whole code span (`chat`), case-sensitively -- the way a text
#     names a value;
#   * names that the protocol or Flask-SocketIO define themselves are left out even when the
#     sample uses them: the reserved events (`connect`, `disconnect`, `message`, ...), the keys and
#     arguments of the API (`sid`, `room`, `to`, `namespace`, `data`, ...); so are the chains'
#     thread names (`main`), terms of fewer than three characters, and the placeholders the
#     chains print for variable values (`<sid-2>`, `<port>`).
SAMPLE_PHRASES = ("sample app", "this site")
PROTOCOL_WORDS = frozenset(
    {
        # events Socket.IO / Flask-SocketIO reserve or fire themselves
        "connect", "disconnect", "connect_error", "message", "json", "error", "ping", "pong", "noop", "upgrade", "close",
        # keys and arguments of the protocol and of Flask-SocketIO's API
        "sid", "room", "rooms", "to", "namespace", "data", "event", "args", "callback", "binary", "method", "text",
        "include_self", "skip_sid", "broadcast", "upgrades", "pingInterval", "pingTimeout", "maxPayload",
    }
)
_PACKET_RE = re.compile(r"4?(?P<type>[2356])(?:\d+-)?(?:/[^,\[]*,)?\d*(?P<json>\[.*\])", re.DOTALL)
_VALUE_RE = re.compile(r"(?P<name>\w+) = (?P<literal>.*)", re.DOTALL)
_NORMALIZED_RE = re.compile(r"<[\w-]+>")  # what the chains print for variable values: <sid-2>, <port>


def _strings(value: object) -> list[str]:
    """Every string in a decoded JSON value: the leaves and the keys of its objects."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _packet_terms(text: str) -> list[str]:
    """The event name and argument strings of a Socket.IO EVENT/ACK packet text (with or without
    its Engine.IO MESSAGE prefix), or of a message-queue emit message; [] for anything else."""
    import json

    m = _PACKET_RE.fullmatch(text)
    try:
        if m:
            return _strings(json.loads(m.group("json")))
        obj = json.loads(text) if text.startswith("{") else None
    except ValueError:
        return []
    if isinstance(obj, dict) and obj.get("method") == "emit":  # python-socketio's PubSubManager message
        return _strings([obj.get("event"), obj.get("data"), obj.get("room")])
    return []


def _literal(value: str | None) -> tuple[str, str] | None:
    """``name = 'text'`` (a hop's observed value) -> (name, text); None when not a str/bytes literal."""
    import ast

    m = _VALUE_RE.fullmatch(value or "")
    if not m:
        return None
    try:
        lit = ast.literal_eval(m.group("literal"))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(lit, bytes):
        lit = lit.decode("utf-8", errors="replace")
    return (m.group("name"), lit) if isinstance(lit, str) else None


def sample_vocabulary(chains: Iterable[Chain], app_dist: str = "sample_app") -> frozenset[str]:
    """The sample's own values, computed from its chains (see the comment above SAMPLE_PHRASES)."""
    terms: set[str] = set(SAMPLE_PHRASES)
    threads: set[str] = set()
    for chain in chains:
        texts = [w.raw for w in chain.wire if not w.layer.startswith(("WebSocket", "HTTP", "Redis", "permessage"))]
        for hop in chain.hops:
            threads.add(hop.thread)
            if hop.func.source.dist == app_dist:  # the app's own functions: its handlers (a method by its own name)
                terms.update(part for part in hop.func.qualname.split(".") if part.isidentifier())
            found = _literal(hop.value)
            if found is None:
                continue
            name, text = found
            if name in ("room", "to", "event"):
                terms.add(text)
            texts.append(text)
        for text in texts:
            terms.update(_packet_terms(text))
    words = set()
    for term in terms:
        term = term.strip()
        if len(term) < 3 or term in PROTOCOL_WORDS or term in threads or _NORMALIZED_RE.fullmatch(term):
            continue
        words.add(term)
        if term not in SAMPLE_PHRASES:  # the markup-like pieces of a payload string: `<b>hi</b>` of `<b>hi</b> & "quotes"`
            words.update(p for p in term.split() if len(p) >= 4 and not p.strip("\"'").isalpha())
    return frozenset(words)


def term_pattern(term: str) -> re.Pattern[str]:
    """How a term of the sample's vocabulary is found in a text (see the comment above SAMPLE_PHRASES)."""
    if term in SAMPLE_PHRASES:
        return re.compile(r"\b" + re.escape(term) + r"\b", re.IGNORECASE)
    if term.isalpha():  # a word: only as a literal value
        q = re.escape(term)
        return re.compile(rf"'{q}'|\"{q}\"|(?<!`)`{q}`(?!`)")
    start = r"\b" if term[0].isalnum() or term[0] == "_" else ""
    end = r"\b" if term[-1].isalnum() or term[-1] == "_" else ""
    return re.compile(start + re.escape(term) + end)


def sample_values(
    annotations: Mapping[str, Annotation], chains: Iterable[Chain], vocabulary: Iterable[str] | None = None,
    app_dist: str = "sample_app",
) -> list[Problem]:
    """General texts that name one of the sample's values (``vocabulary``, by default
    sample_vocabulary of ``chains``): each must become a placeholder, a text keyed to the
    sample's journey, or a general sentence. The texts of the sample's own functions are
    about the sample by nature (no other app has them) and are not read."""
    chains = list(chains)
    own = {h.func.key for c in chains for h in c.hops if h.func.source.dist == app_dist}
    vocabulary = sample_vocabulary(chains, app_dist) if vocabulary is None else vocabulary
    patterns = [(t, term_pattern(t)) for t in sorted(vocabulary)]
    out = []
    for key, ann in sorted(annotations.items(), key=lambda kv: (kv[1].file, kv[1].line)):
        if key.startswith(JOURNEY_PREFIX) or ann.journey is not None or ann.func_key in own:
            continue
        named = [t for t, p in patterns if p.search(ann.text)]
        if named:
            said = ", ".join(repr(t) for t in named)
            out.append(
                Problem(
                    "sample",
                    key,
                    ann.where,
                    f"{ann.where}: {key} is a general text but names the sample app's {said}; a general text holds for any app: "
                    f"use a placeholder, or write {key}@<journey> for the sample's journey",
                )
            )
    return out


# --------------------------------------------------------------------------- all checks, one place

CHECKS = ("missing", "orphaned", "stale", "unreviewed", "sample_values")


def problems(
    chains: Iterable[Chain], annotations: Mapping[str, Annotation], sources: Mapping[Source, str | bytes] | None = None,
    *, journeys: Iterable[str] | None = None, only: Iterable[str] = CHECKS,
) -> list[Problem]:
    """The annotation checks, in one order: missing, orphaned, stale, unreviewed, and general texts
    that name the sample's values. ``only`` picks a subset (each caller names the ones it runs);
    ``orphaned`` runs only when ``journeys`` (every journey the texts may be keyed to) is given,
    since a text is known to be on no chain only once every journey is recorded; ``stale`` needs
    ``sources``."""
    chains, only = list(chains), set(only)
    if only - set(CHECKS):
        raise ValueError(f"unknown annotation checks: {sorted(only - set(CHECKS))}")
    out = missing(chains, annotations) if "missing" in only else []
    if "orphaned" in only and journeys is not None:
        out += orphaned(chains, annotations, journeys)
    if "stale" in only:
        out += stale(chains, annotations, sources or {})
    if "unreviewed" in only:
        out += unreviewed(chains, annotations)
    if "sample_values" in only:
        out += sample_values(annotations, chains)
    return out
