"""Raw rows -> a deterministic TraceFile, in named steps (all pure).

1. ``raw_calls``: the recorder's rows, code resolved to function keys (``RawCall``, ``Returned``);
2. ``learn_peer_ports``: ports the OS chose for peers become placeholders;
3. ``CallTree``: the call tree per thread, with repeated sibling subtrees folded (idle polls,
   pings, the handler of the 50th identical message) and aliased to the one kept;
4. ``ThreadOrder``: threads placed after their starter, in the order they were started, and
   named by role (``request-1``, ``ws-reader-1`` ...);
5. ``IdentityTokens``: an object seen by two or more kept calls gets a token (data edges);
6. ``build_events`` and ``wakeups``: the events and the notify -> wait pairs of the trace file.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from ..catalog import GEVENT_DISTS, THREAD_ROLES
from ..model import Event, Func, ThreadInfo, TraceFile, Value, WakeUp, with_ends
from .values import IMMUTABLE, Normalizer

SYNC_NOTIFY = ("Condition.notify", "Condition.notify_all")
SYNC_WAIT = "Condition.wait"
# What wakes whom, by function: a notify on an object ends a wait on the same object. Threads
# hand off through Condition (Queue and Event are written over it); greenlets through gevent's
# own Queue and Event (its pure-Python modules, PURE_PYTHON=1), whose put and set schedule the
# waiter's switch through the hub.
HAND_OFFS: tuple[tuple[frozenset[str], frozenset[str]], ...] = (
    (frozenset(f"threading:{q}" for q in SYNC_NOTIFY), frozenset({f"threading:{SYNC_WAIT}"})),
    (frozenset({"gevent.queue:SimpleQueue.put", "gevent.queue:Queue.put"}),
     frozenset({"gevent.queue:SimpleQueue.get", "gevent.queue:Queue.get"})),
    (frozenset({"gevent.event:Event.set"}), frozenset({"gevent.event:Event.wait"})),
)
# Traced (their hand-offs and starts are seen) but shown opaque: no call of theirs is in a trace
# file, so no page links into gevent (see docs/how.md, "Greenlets").
OPAQUE_DISTS = frozenset(d.name for d in GEVENT_DISTS)
MAX_PERIOD = 3  # the longest block of repeated siblings that folding looks for


class Arg(NamedTuple):
    name: str
    oid: int  # id() of the value, read while it was still alive
    value: object


class Returned(NamedTuple):
    """How a call ended: its value (or ``raised``), the line it left from, the size it had."""

    seq: int  # calls recorded so far when it returned (orders returns against calls)
    oid: int
    value: object
    line: int
    size: int = -1  # a container's length when it was returned; -1 for others
    raised: bool = False  # left by an exception: value is None


class RawCall(NamedTuple):
    """A raw row with its code already resolved to a Func key."""

    row: int
    func: str
    serial: int  # the thread's serial in the recording
    parent: int  # the caller's row, -1 for a thread's first frame
    line: int  # the caller's line that made the call
    args: tuple[Arg, ...]
    ret: Returned | None


# --------------------------------------------------------------------------- 1. raw rows


def raw_calls(
    call_rows: Iterable[tuple], codes: list, returns: Mapping[int, tuple], func_of: Callable, line_at: Callable, raised: object
) -> list[RawCall]:
    """The recorder's rows as RawCalls: ``call_rows`` gives (code, serial, parent, offset, args)
    per row, ``codes`` the code of each row, ``returns`` row -> (seq, value, offset, size), with
    ``raised`` as the value of a call left by an exception. The bytes a probe observed (what
    recv_into wrote into its caller's buffer) become that caller's value."""
    calls: list[RawCall] = []
    observed: dict[int, Returned] = {}
    for row, (code, serial, parent, offset, args) in enumerate(call_rows):
        func = func_of(code)
        if func.key == "_socket:socket.observed":
            data = args[0][1]
            observed[parent] = Returned(returns.get(parent, (0,))[0], id(data), data, 0)
            continue
        line = line_at(codes[parent], offset) if parent >= 0 else 0
        ret = returns.get(row)
        if ret is not None:
            seq, value, ret_offset, size = ret
            ret = (
                Returned(seq, 0, None, line_at(code, ret_offset), raised=True)
                if value is raised
                else Returned(seq, id(value), value, line_at(code, ret_offset), size)
            )
        calls.append(RawCall(row, func.key, serial, parent, line, tuple(Arg(n, id(v), v) for n, v in args), ret))
    return [c._replace(ret=observed.get(c.row, c.ret)) for c in calls]


def session_ids(calls: Iterable[RawCall]) -> dict[str, str]:
    """Engine.IO session ids (what ``generate_id`` returned) -> ``<sid-N>``, in order of birth."""
    out: dict[str, str] = {}
    for c in calls:
        # engineio.base_server:BaseServer.generate_id; before python-engineio 4.8, engineio.server:Server.generate_id
        if c.func.startswith("engineio.") and c.func.endswith((":BaseServer.generate_id", ":Server.generate_id")) and c.ret and isinstance(c.ret.value, str):
            out.setdefault(c.ret.value, f"<sid-{len(out) + 1}>")
    return out


def values_seen(calls: Iterable[RawCall]) -> list[object]:
    """Every argument and return value, for learning the secrets among them."""
    return [v for c in calls for v in [*(a.value for a in c.args), c.ret.value if c.ret else None]]


# --------------------------------------------------------------------------- 2. peer ports


def learn_peer_ports(calls: Iterable[RawCall], normalizer: Normalizer) -> None:
    """An accepted connection's peer port is chosen by the OS: a placeholder wherever it shows."""
    for c in calls:
        if c.func == "_socket:socket._accept" and c.ret and isinstance(c.ret.value, tuple):
            addr = c.ret.value[1] if len(c.ret.value) > 1 else None
            if isinstance(addr, tuple) and len(addr) > 1 and isinstance(addr[1], int):
                normalizer.learn_client_port(addr[1])


# --------------------------------------------------------------------------- 3. the call tree, folded


class CallTree:
    """The calls as a tree, whose repeated sibling blocks are folded into the first of them."""

    def __init__(self, calls: list[RawCall], normalizer: Normalizer) -> None:
        self.normalizer = normalizer
        self.row_of = {c.row: c for c in calls}
        self.by_thread: dict[int, list[RawCall]] = defaultdict(list)
        self.children: dict[int, list[int]] = defaultdict(list)
        for c in calls:
            self.by_thread[c.serial].append(c)
            self.children[c.parent].append(c.row)
        self.alias: dict[int, int] = {}  # dropped row -> the kept row it duplicates
        self.idle: set[int] = set()  # rows of idle poll iterations, dropped with their subtrees
        self._signatures: dict[int, tuple] = {}

    def ret_text(self, func: str, ret: Returned) -> str:
        text = self.normalizer.value(func, "return", ret.value)
        # the size a container had when it was returned, which the caller saw
        return f"{text[:-1]} len={ret.size}>" if ret.size >= 0 and text.startswith("<") else text

    def signature(self, row: int) -> tuple:
        """What a call did, as far as folding compares: function, line, values, folded subtree."""
        if row not in self._signatures:
            c = self.row_of[row]
            kids = tuple(self.signature(k) for k in self.folded(self.children.get(row, [])))
            args = tuple((a.name, self.normalizer.value(c.func, a.name, a.value)) for a in c.args)
            ret = None if c.ret is None else ("raised",) if c.ret.raised else self.ret_text(c.func, c.ret)
            self._signatures[row] = (c.func, c.line, args, ret, kids)
        return self._signatures[row]

    def busy(self, kids: list[int]) -> list[int]:
        """Siblings without the idle iterations of a poll loop: a call that returned an empty
        container and is made again, from the same line, later among the same siblings. It
        and what follows it, up to that next call, happen as often as the clock allows."""
        row_of = self.row_of
        # only calls that sometimes return something: an always-empty result is no poll
        busy_sites = {(c.func, c.line) for c in (row_of[k] for k in kids) if c.ret and c.ret.size > 0}
        out: list[int] = []
        i = 0
        while i < len(kids):
            c = row_of[kids[i]]
            again = next((j for j in range(i + 1, len(kids)) if (row_of[kids[j]].func, row_of[kids[j]].line) == (c.func, c.line)), None)
            if c.ret is not None and c.ret.size == 0 and again is not None and (c.func, c.line) in busy_sites:
                self.idle.update(kids[i:again])
                i = again
                continue
            out.append(kids[i])
            i += 1
        return out

    def folded(self, kids: list[int]) -> list[int]:
        """Siblings with every block of up to MAX_PERIOD calls that repeats the block just
        before it dropped: idle loops (select, service_actions, select, ...) run as often as
        the clock allows, and only their shape matters."""
        kept: list[int] = []
        for k in self.busy(kids):
            kept.append(k)
            for period in range(1, MAX_PERIOD + 1):
                if len(kept) >= 2 * period and all(
                    self.signature(a) == self.signature(b) for a, b in zip(kept[-2 * period : -period], kept[-period:])
                ):
                    for d, a in zip(kept[-period:], kept[-2 * period : -period]):
                        self.alias_tree(d, a)
                    del kept[-period:]
                    break
        return kept

    def alias_tree(self, dropped: int, kept: int) -> None:
        """``dropped`` and its subtree stand for ``kept`` and its subtree from now on."""
        self.alias[dropped] = kept
        for d, k in zip(self.folded(self.children.get(dropped, [])), self.folded(self.children.get(kept, []))):
            self.alias_tree(d, k)

    def preorder(self, row: int) -> Iterable[int]:
        yield row
        for k in self.folded(self.children.get(row, [])):
            yield from self.preorder(k)


# --------------------------------------------------------------------------- 4. threads: order and names


def thread_role(root_children: list[str]) -> str:
    """A logical role from what a thread ran first (the target of Thread.run)."""
    first = root_children[0] if root_children else ""
    for needle, role in THREAD_ROLES:
        if needle in first:
            return role
    return "thread"


class ThreadOrder:
    """Threads in a canonical order: breadth first from the main thread, each placed after its
    starter and the threads one thread starts in the order it started them; a thread that did
    exactly what an earlier one did is folded into it. Each kept row gets its position."""

    def __init__(self, tree: CallTree, thread_starts: Mapping[int, int], last: frozenset[int] = frozenset(),
                 greenlets: Mapping[int, str] | None = None) -> None:
        """``last``: threads placed after all others (with the threads they started): the app's
        tasks still running at the cut, whose number of turns may vary from run to run, so
        that the events of every other thread keep their indexes."""
        self.tree = tree
        self.greenlets = greenlets or {}
        self.serials = sorted(tree.by_thread)
        self.roots = {s: [c.row for c in tree.by_thread[s] if c.parent == -1] for s in self.serials}
        self.order: list[int] = []  # kept serials
        self.position: dict[int, int] = {}  # raw row -> canonical index
        self.name: dict[int, str] = {}
        self._roles: dict[str, int] = defaultdict(int)
        self._twins: dict[tuple, int] = {}
        starts_of: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for serial, start_row in thread_starts.items():
            if start_row >= 0 and serial in tree.by_thread:
                starter = tree.row_of[start_row].serial if start_row in tree.row_of else self.serials[0]
                starts_of[starter].append((start_row, serial))
        queue: list[int] = [self.serials[0]]
        placed: set[int] = set()
        later: list[int] = []
        defer = True
        while queue or later:
            if not queue:  # every other thread is placed: now the deferred ones, and what they started
                queue, later, defer = later, [], False
            s = queue.pop(0)
            if s in placed or s not in tree.by_thread:
                continue
            if defer and s in last:
                later.append(s)
                continue
            placed.add(s)
            self._place(s)
            for _, child in sorted(starts_of[s], key=lambda p: self.position.get(tree.alias.get(p[0], p[0]), 1 << 60)):
                queue.append(child)
        for s in self.serials:  # threads whose start was not seen (should not happen)
            if s not in placed:
                placed.add(s)
                self._place(s)

    def _place(self, serial: int) -> None:
        tree = self.tree
        kept_roots = tree.folded(self.roots[serial])
        sig = tuple(tree.signature(r) for r in kept_roots)
        twin = self._twins.get(sig)
        if twin is not None and serial != self.serials[0]:
            # A thread that did exactly what an earlier one did (the handler of the
            # 50th identical message) is kept once, like repeated calls are.
            for mine, theirs in zip(kept_roots, tree.folded(self.roots[twin])):
                tree.alias_tree(mine, theirs)
            return
        self._twins.setdefault(sig, serial)
        self.order.append(serial)
        rows = [r for root in kept_roots for r in tree.preorder(root)]
        self.name[serial] = "main" if serial == self.serials[0] else self._role_name(serial)
        for r in rows:
            self.position[r] = len(self.position)

    def _role_name(self, serial: int) -> str:
        tree = self.tree
        first_root = self.roots[serial][0]
        kids = [tree.row_of[k].func for k in tree.children.get(first_root, [])]
        role = thread_role(kids or [tree.row_of[first_root].func])
        if role == "thread" and serial in self.greenlets:
            role = next(filter(None, map(self._green_role, self.roots[serial])), "") or self.greenlets[serial]
        self._roles[role] += 1
        return role if role in ("server", "eio-service", "hub") and self._roles[role] == 1 else f"{role}-{self._roles[role]}"

    def _green_role(self, root: int, depth: int = 4) -> str:
        """A greenlet's role from one of its roots: gevent's own calls are left out (opaque_calls), so
        a greenlet may have several roots, and a patched Thread's bootstrap comes first: the root and
        the calls under it are searched, nearest first, for the first one a role names."""
        tree = self.tree
        level = [root]
        role = thread_role([tree.row_of[root].func])
        if role != "thread":
            return role
        for _ in range(depth):
            level = [k for r in level for k in tree.children.get(r, [])]
            for k in level:
                role = thread_role([tree.row_of[k].func])
                if role != "thread":
                    return role
        return ""

    def canon(self, row: int) -> int:
        """The canonical index of a raw row (through the aliases of folding); -1 when dropped."""
        while row in self.tree.alias:
            row = self.tree.alias[row]
        return self.position.get(row, -1)

    def kept_rows(self) -> list[int]:
        return sorted(self.position, key=self.position.__getitem__)


# --------------------------------------------------------------------------- 5. identity tokens


def _tokenizable(v: object) -> bool:
    # Small ints, None, bools and short strings are shared by the interpreter:
    # their identity says nothing about data flow.
    if isinstance(v, (str, bytes)):
        return len(v) >= 8
    return type(v) not in IMMUTABLE


class IdentityTokens:
    """A token for each object seen by two or more kept calls, numbered in order of first use."""

    def __init__(self, kept: Iterable[RawCall]) -> None:
        self._seen: dict[int, set[int]] = defaultdict(set)
        for c in kept:
            for a in c.args:
                if _tokenizable(a.value):
                    self._seen[a.oid].add(c.row)
            if c.ret and _tokenizable(c.ret.value):
                self._seen[c.ret.oid].add(c.row)
        self._token: dict[int, int] = {}

    def __call__(self, oid: int, value: object) -> int:
        if not _tokenizable(value) or len(self._seen.get(oid, ())) < 2:
            return 0
        return self._token.setdefault(oid, len(self._token) + 1)


# --------------------------------------------------------------------------- 6. events and wake-ups


def _step_lookup(steps: list[tuple[str, int, int]]) -> Callable[[int], str]:
    def step_of(row: int) -> str:
        name = ""
        for step, first, _ in steps:
            if row >= first:
                name = step
        return name

    return step_of


def build_events(
    tree: CallTree, threads: ThreadOrder, tokens: IdentityTokens, funcs: Mapping[str, Func],
    steps: list[tuple[str, int, int]], thread_starts: Mapping[int, int],
) -> list[Event]:
    """The kept calls as events, in canonical order, each with its end (last descendant)."""
    # A thread's step is the step during which it started: the steps of single
    # calls would depend on how far a thread got before the driver moved on.
    step_of_row = _step_lookup(steps)
    thread_step = {
        s: step_of_row(thread_starts.get(s, -1) if thread_starts.get(s, -1) >= 0 else threads.roots[s][0]) for s in threads.serials
    }
    events: list[Event] = []
    depth_of: dict[int, int] = {}
    for r in threads.kept_rows():
        c = tree.row_of[r]
        parent = threads.canon(c.parent) if c.parent >= 0 else -1
        idx = len(events)
        depth_of[idx] = depth_of[parent] + 1 if parent >= 0 else 0
        args = tuple(Value(a.name, tree.normalizer.value(c.func, a.name, a.value), tokens(a.oid, a.value)) for a in c.args)
        raised = bool(c.ret and c.ret.raised)
        ret = Value("return", tree.ret_text(c.func, c.ret), tokens(c.ret.oid, c.ret.value)) if c.ret and not raised else None
        events.append(
            Event(
                idx, c.func, threads.name[c.serial], parent, c.line, depth_of[idx], idx, thread_step[c.serial],
                # a probe's lines are the recorder's own, not the C function's
                args, ret, raised, c.ret.line if c.ret and funcs[c.func].source.dist != "builtin" else 0,
            )
        )
    return with_ends(events)


def wakeups(calls: list[RawCall], canon: Callable[[int], int]) -> tuple[WakeUp, ...]:
    """Pair each Condition.wait that returned with the notify that ended it.

    The notify must run on another thread, on the same Condition, after the
    wait began and before it returned: the first such notify is the one that
    woke it (later ones found no waiter or woke another).
    """
    notifies: dict[tuple[int, int], list[RawCall]] = defaultdict(list)
    waits: list[tuple[int, RawCall, Returned]] = []
    for c in calls:
        if not c.args:
            continue
        for kind, (notify, wait) in enumerate(HAND_OFFS):
            if c.func in notify:
                notifies[kind, c.args[0].oid].append(c)
            elif c.func in wait and c.ret is not None:
                waits.append((kind, c, c.ret))
    pairs = set()
    for kind, w, returned in waits:
        for n in notifies.get((kind, w.args[0].oid), ()):
            if w.row < n.row < returned.seq and n.serial != w.serial:
                a, b = canon(n.row), canon(w.row)
                if a >= 0 and b >= 0:
                    pairs.add((a, b))
                break
    return tuple(WakeUp(a, b) for a, b in sorted(pairs))


# --------------------------------------------------------------------------- 7. threads still running


class Running(NamedTuple):
    """A thread still running when the recording was cut (a background task's ``while True``)."""

    thread: str  # its name in the trace (or the thread it was folded into)
    task: str  # the function it was in: its outermost unfinished call of the app's code, else the one its run() was in
    iterations: int  # calls made from the busiest line of that function (a loop's turns), before folding (the recorder's too)


def _open_path(tree: CallTree, row: int) -> list[int]:
    """``row`` and its last child, and that one's, while they never returned: where a thread
    still running at the cut was."""
    path = [row]
    while True:
        kids = tree.children.get(path[-1], [])
        if not kids or tree.row_of[kids[-1]].ret is not None:
            return path
        path.append(kids[-1])


def app_tasks_cut(tree: CallTree, funcs: Mapping[str, Func]) -> frozenset[int]:
    """The threads still running at the cut inside the app's own code (a background task's loop)."""
    out = set()
    for serial, calls in tree.by_thread.items():
        root = next((c for c in calls if c.parent == -1), None)
        if root is not None and root.ret is None and any(
            funcs[tree.row_of[r].func].source.dist == "sample_app" for r in _open_path(tree, root.row)
        ):
            out.add(serial)
    return frozenset(out)


def running_threads(calls: list[RawCall], threads: ThreadOrder, funcs: Mapping[str, Func],
                    folded: Mapping[tuple[int, int], int] | None = None) -> tuple[Running, ...]:
    """The threads whose first call never returned: they were still running at the cut.
    Counted from the raw calls, before folding (which keeps one of identical iterations), with
    the calls the recorder folded (``folded``: (parent row, line) -> calls, record.fold)."""
    tree = threads.tree
    out = []
    for serial in threads.serials:
        roots = threads.roots[serial]
        if serial == threads.serials[0] or not roots or tree.row_of[roots[0]].ret is not None:
            continue
        path = _open_path(tree, roots[0])
        task = next((r for r in path if funcs[tree.row_of[r].func].source.dist == "sample_app"), path[min(1, len(path) - 1)])
        sites: dict[tuple[str, int], int] = defaultdict(int)
        for k in tree.children.get(task, []):
            sites[(tree.row_of[k].func, tree.row_of[k].line)] += 1
        for func, line in list(sites):
            sites[(func, line)] += (folded or {}).get((task, line), 0)
        name = threads.name.get(serial) or threads.name.get(_folded_into(threads, serial), f"thread #{serial}")
        out.append(Running(name, tree.row_of[task].func, max(sites.values(), default=0)))
    return tuple(out)


def recorder_folds(calls: list[RawCall], threads: ThreadOrder, folded: Mapping[tuple[int, int], int]) -> tuple[tuple[str, int], ...]:
    """(thread, iterations) the recorder kept a count of instead of rows (record.fold), by thread
    name: under each call, the calls folded from its busiest line (a loop's turns), summed."""
    serial_of = {c.row: c.serial for c in calls}
    busiest: dict[int, int] = defaultdict(int)  # parent row -> calls folded from its busiest line
    for (parent, _line), n in folded.items():
        busiest[parent] = max(busiest[parent], n)
    out: dict[str, int] = defaultdict(int)
    for parent, n in busiest.items():
        serial = serial_of.get(parent)
        if serial is not None:
            out[threads.name.get(serial) or threads.name.get(_folded_into(threads, serial), f"thread #{serial}")] += n
    return tuple(sorted(out.items()))


def _folded_into(threads: ThreadOrder, serial: int) -> int:
    """The kept thread a folded (identical) thread stands for."""
    root = threads.roots[serial][0]
    kept = threads.canon(root)
    return next((s for s in threads.order if threads.roots[s] and threads.canon(threads.roots[s][0]) == kept), serial)


# --------------------------------------------------------------------------- opaque code


def opaque_calls(calls: list[RawCall], hidden: frozenset[str]) -> tuple[list[RawCall], dict[int, tuple[int, int]]]:
    """``calls`` without the calls of ``hidden`` functions (gevent's own: OPAQUE_DISTS), each
    call under one lifted to the nearest kept caller, with the line there that led into the hidden
    code; and every left-out row -> (that kept caller's row or -1, that line). Hand-offs and starts
    found on left-out calls (gevent's Queue.put, Greenlet.start) are kept through ``lift``."""
    if not hidden:
        return calls, {}
    lift: dict[int, tuple[int, int]] = {}
    out: list[RawCall] = []
    for c in calls:
        parent, line = lift.get(c.parent, (c.parent, c.line)) if c.parent >= 0 else (-1, c.line)
        if c.func in hidden:
            lift[c.row] = (parent, line)
        else:
            out.append(c._replace(parent=parent, line=line if parent >= 0 else 0) if parent != c.parent else c)
    return out, lift


def _lifted_start(every: list[RawCall], kept: list[RawCall], lift: Mapping[int, tuple[int, int]], row: int) -> int:
    """The row shown for the start ``row`` of a thread or greenlet: itself, else its nearest kept
    caller, else (hidden code all the way down, as in gevent's hub, which spawns a greenlet per
    accepted connection) the last kept call before it on its own lane (that accept)."""
    if row < 0 or row not in lift:
        return row
    up = lift[row][0]
    if up >= 0:
        return up
    serial = next((c.serial for c in every if c.row == row), None)
    before = [c.row for c in kept if c.serial == serial and c.row < row]
    return before[-1] if before else -1


# --------------------------------------------------------------------------- all steps


def normalize(
    scenario: str,
    python: str,
    versions: Mapping[str, str],
    steps: list[tuple[str, int, int]],
    calls: list[RawCall],
    funcs: Mapping[str, Func],
    thread_starts: Mapping[int, int],
    normalizer: Normalizer,
    running: list[Running] | None = None,
    greenlets: Mapping[int, str] | None = None,
    folded: Mapping[tuple[int, int], int] | None = None,
) -> TraceFile:
    """A deterministic TraceFile from raw calls: the steps above, in order. ``running``, when
    given, is extended with the threads still running at the cut (step 7). ``greenlets``: the
    serials that are greenlets (a gevent program) -> "hub" or "greenlet", their name when no role fits;
    ``folded``: the calls the recorder kept a count of, (parent row, line) -> calls (record.fold)."""
    every = calls
    calls, lift = opaque_calls(calls, frozenset(k for k, f in funcs.items() if f.source.dist in OPAQUE_DISTS))
    thread_starts = {s: _lifted_start(every, calls, lift, r) for s, r in thread_starts.items()}
    learn_peer_ports(calls, normalizer)
    tree = CallTree(calls, normalizer)
    threads = ThreadOrder(tree, thread_starts, app_tasks_cut(tree, funcs), greenlets)
    tokens = IdentityTokens(tree.row_of[r] for r in threads.kept_rows())
    events = build_events(tree, threads, tokens, funcs, steps, thread_starts)
    infos = []
    for s in threads.order:
        start_row = thread_starts.get(s, -1)
        if start_row >= 0 and threads.canon(start_row) < 0:
            start_row = -1
        first = next(i for i, e in enumerate(events) if e.thread == threads.name[s])
        infos.append(ThreadInfo(threads.name[s], threads.canon(start_row) if start_row >= 0 else -1, first))
    used = {e.func for e in events}
    if running is not None:
        running.extend(running_threads(calls, threads, funcs, folded))
    return TraceFile(
        scenario=scenario,
        python=python,
        versions=tuple(sorted(versions.items())),
        steps=tuple(name for name, _, _ in steps),
        funcs={k: funcs[k] for k in sorted(used)},
        threads=tuple(infos),
        events=tuple(events),
        wakeups=wakeups(every, lambda row: threads.canon(lift.get(row, (row, 0))[0])),
        folded=recorder_folds(every, threads, folded or {}),
    )
