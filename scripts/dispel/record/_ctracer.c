/* The C core of dispel's recorder: the hot path of record.SettraceRecorder, as a
 * profile function (PyEval_SetProfile), like coverage.py's CTracer.
 *
 * A profile function sees the same call and return events as a trace function,
 * without the line events and without the locals dict built for every call: only
 * the calls of wanted code read their arguments. Everything it records goes into
 * the same RawTrace layout as the Python core (record.RawTrace), so the two write
 * byte-identical trace files. Rare events (Thread.start, Condition.notify and
 * Condition.wait) call back into Python; so does the first call of each code
 * object (record._Decisions) and any error (the recorder disables itself).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#ifdef Py_GIL_DISABLED
/* Its caches (decisions by address, each thread's Thread) count on the GIL: without it, the
 * build fails and the Python cores record (the extension is optional). */
#error "dispel.record._ctracer needs a Python with the GIL"
#endif
#include <frameobject.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

/* A call's arguments are read from the frame's fast locals (the first slots of localsplus),
 * which needs the internal frame layout: 3.11 has no public way to read one variable of a
 * frame, and 3.12's PyFrame_GetVar compares every name up to it and, for a captured
 * argument, scans the bytecode up to the current instruction. */
#define Py_BUILD_CORE 1
#include <internal/pycore_code.h>
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE
/* Core.monitor's states dicts: how many changes they have seen (see current_thread) */
static uint64_t states_version = 1;
#if PY_VERSION_HEX >= 0x030C0000
static int states_watcher = -1;
#endif

#if PY_VERSION_HEX >= 0x030D0000
#define FRAME_CODE(f) _PyFrame_GetCode(f)
#else
#define FRAME_CODE(f) ((f)->f_code)
#endif

typedef struct {
    int64_t *data;
    Py_ssize_t len, cap;
} I64Buf;

static int
buf_push(I64Buf *b, const int64_t *vals, Py_ssize_t n)
{
    if (b->len + n > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + n) {
            cap *= 2;
        }
        int64_t *data = PyMem_Realloc(b->data, (size_t)cap * sizeof(int64_t));
        if (data == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, vals, (size_t)n * sizeof(int64_t));
    b->len += n;
    return 0;
}

/* ------------------------------------------------------------------ decisions by address */

/* What is recorded of each code object seen (its argument names or None), found by the
 * object's address. The decisions dict hashes a code object by its contents (names,
 * constants, bytecode: code_hash recomputes that on every lookup), which was the largest
 * single cost of an event; this open-addressing table hashes the pointer. It holds
 * references to both, so an address is never reused while it is in the table. */
typedef struct {
    PyObject *code, *names;
} Decision;

typedef struct {
    Decision *slots;
    Py_ssize_t used, cap;  /* cap: a power of two, or 0 */
} DecisionTable;

static inline size_t
address_hash(PyObject *code)
{
    return (size_t)(((uintptr_t)code >> 4) * (uintptr_t)0x9E3779B97F4A7C15ULL);
}

/* ``code``'s names (borrowed), or NULL when it is not in the table. */
static inline PyObject *
table_get(DecisionTable *t, PyObject *code)
{
    if (t->cap == 0) {
        return NULL;
    }
    size_t mask = (size_t)t->cap - 1;
    for (size_t i = address_hash(code) & mask;; i = (i + 1) & mask) {
        if (t->slots[i].code == code) {
            return t->slots[i].names;
        }
        if (t->slots[i].code == NULL) {
            return NULL;
        }
    }
}

static void
table_place(Decision *slots, size_t mask, Decision d)
{
    size_t i = address_hash(d.code) & mask;
    while (slots[i].code != NULL) {
        i = (i + 1) & mask;
    }
    slots[i] = d;
}

/* Add ``code`` (not in the table yet) -> ``names``. -1 with an exception set on error. */
static int
table_add(DecisionTable *t, PyObject *code, PyObject *names)
{
    if (2 * (t->used + 1) > t->cap) {
        Py_ssize_t cap = t->cap ? 2 * t->cap : 1024;
        Decision *slots = PyMem_Calloc((size_t)cap, sizeof(Decision));
        if (slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < t->cap; i++) {
            if (t->slots[i].code != NULL) {
                table_place(slots, (size_t)cap - 1, t->slots[i]);
            }
        }
        PyMem_Free(t->slots);
        t->slots = slots;
        t->cap = cap;
    }
    table_place(t->slots, (size_t)t->cap - 1, (Decision){Py_NewRef(code), Py_NewRef(names)});
    t->used++;
    return 0;
}

static void
table_clear(DecisionTable *t)
{
    for (Py_ssize_t i = 0; i < t->cap; i++) {
        Py_XDECREF(t->slots[i].code);
        Py_XDECREF(t->slots[i].names);
    }
    PyMem_Free(t->slots);
    t->slots = NULL;
    t->used = t->cap = 0;
}

/* ------------------------------------------------------------------ Core */

typedef struct {
    PyObject_HEAD
    PyObject *decisions;   /* dict: code -> argument names (tuple) or None */
    PyObject *decide;      /* decide(code) -> names or None, and stores it in decisions */
    PyObject *codes;       /* list: code per row */
    PyObject *values;      /* list: argument values, flat */
    PyObject *ret_values;  /* list: value per return */
    PyObject *missing;     /* record.MISSING */
    PyObject *raised;      /* record.RAISED */
    PyObject *start_code, *notify_code, *wait_code;
    PyObject *on_start;    /* on_start(thread, row): Thread.start(thread) was called */
    PyObject *on_notify;   /* on_notify(condition): Condition.notify was called */
    PyObject *on_woken;    /* on_woken(condition): Condition.wait returns */
    PyObject *on_error;    /* on_error(exception) */
    I64Buf ints;           /* serial, parent row, offset in parent: per row */
    I64Buf rets;           /* row, rows so far, offset, size: per return */
    int profile;           /* a profile function is installed (the 3.11 core), else sys.monitoring calls */
    int stopped;           /* the recording has ended (Core.stop): threads still running record nothing */
    /* for sys.monitoring (Core.monitor): */
    PyObject *states;      /* dict: thread ident -> Thread */
    PyObject *joining;     /* joining(code, frame) -> the Thread of a thread that had none, or None */
    PyObject *disable;     /* sys.monitoring.DISABLE */
    PyObject *boot, *boot_outer;  /* Thread._bootstrap_inner's and Thread._bootstrap's code */
    DecisionTable seen;    /* the decisions again, by code object address (see DecisionTable) */
    /* record.fold: bounded memory */
    Py_ssize_t fold_after; /* calls of one shape kept under one open call */
    Py_ssize_t barrier;    /* rows below it are named elsewhere (a start, a step, a switch): never folded */
    int64_t *folded;       /* (parent row, offset in the parent, calls folded) per place folded under */
    Py_ssize_t nfolded, folded_cap, folded_hit;  /* folded_hit: the place counted last */
    struct Thread **threads;  /* every Thread of this core (borrowed; each removes itself when freed) */
    Py_ssize_t nthreads, threads_cap;
} Core;

#define CORE_SLOTS 14

/* The object fields of a Core, in the order Core() takes them. */
static void
core_slots(Core *self, PyObject **slots[CORE_SLOTS])
{
    PyObject **all[CORE_SLOTS] = {&self->decisions, &self->decide, &self->codes, &self->values, &self->ret_values,
                                  &self->missing, &self->raised, &self->start_code, &self->notify_code,
                                  &self->wait_code, &self->on_start, &self->on_notify, &self->on_woken,
                                  &self->on_error};
    memcpy(slots, all, sizeof(all));
}

static void
Core_dealloc(Core *self)
{
    PyObject **slots[CORE_SLOTS];
    core_slots(self, slots);
    for (int i = 0; i < CORE_SLOTS; i++) {
        Py_CLEAR(*slots[i]);
    }
    Py_CLEAR(self->states);
    Py_CLEAR(self->joining);
    Py_CLEAR(self->disable);
    Py_CLEAR(self->boot);
    Py_CLEAR(self->boot_outer);
    table_clear(&self->seen);
    PyMem_Free(self->folded);
    PyMem_Free(self->threads);
    states_version++;  /* no thread-local slot may name this core any more */
    PyMem_Free(self->ints.data);
    PyMem_Free(self->rets.data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Core_init(Core *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"decisions", "decide", "codes", "values", "ret_values", "missing", "raised",
                             "start_code", "notify_code", "wait_code", "on_start", "on_notify", "on_woken",
                             "on_error", NULL};
    PyObject *o[CORE_SLOTS];
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OO!O!O!OOOOOOOOO", kwlist, &PyDict_Type, &o[0], &o[1],
                                     &PyList_Type, &o[2], &PyList_Type, &o[3], &PyList_Type, &o[4], &o[5],
                                     &o[6], &o[7], &o[8], &o[9], &o[10], &o[11], &o[12], &o[13])) {
        return -1;
    }
    PyObject **slots[CORE_SLOTS];
    core_slots(self, slots);
    for (int i = 0; i < CORE_SLOTS; i++) {
        Py_INCREF(o[i]);
        Py_XSETREF(*slots[i], o[i]);
    }
    table_clear(&self->seen);  /* the decisions of another dict */
    if (self->fold_after == 0) {
        self->fold_after = PY_SSIZE_T_MAX;  /* until the recorder sets it */
    }
    return 0;
}

static PyMemberDef Core_members[] = {
    {"fold_after", T_PYSSIZET, offsetof(Core, fold_after), 0, "Calls of one shape kept under one open call (record.fold)."},
    {"barrier", T_PYSSIZET, offsetof(Core, barrier), 0, "Rows below it are never folded (record.fold)."},
    {NULL}
};

static PyObject *
Core_get_folded(Core *self, void *Py_UNUSED(closure))
{
    PyObject *out = PyDict_New();
    for (Py_ssize_t i = 0; out != NULL && i < self->nfolded; i++) {
        int64_t *f = self->folded + 3 * i;
        PyObject *key = Py_BuildValue("(LL)", (long long)f[0], (long long)f[1]), *n = PyLong_FromLongLong(f[2]);
        if (key == NULL || n == NULL || PyDict_SetItem(out, key, n) < 0) {
            Py_CLEAR(out);
        }
        Py_XDECREF(key);
        Py_XDECREF(n);
    }
    return out;
}

static PyGetSetDef Core_getset[] = {
    {"folded", (getter)Core_get_folded, NULL, "(parent row, offset in the parent) -> calls folded (record.fold).", NULL},
    {NULL}
};

static PyObject *
int64_bytes(I64Buf *b)
{
    return PyBytes_FromStringAndSize((const char *)b->data, b->len * (Py_ssize_t)sizeof(int64_t));
}

static PyObject *
Core_ints(Core *self, PyObject *Py_UNUSED(ignored))
{
    return int64_bytes(&self->ints);
}

static PyObject *
Core_rets(Core *self, PyObject *Py_UNUSED(ignored))
{
    return int64_bytes(&self->rets);
}

static PyObject *
Core_stop(Core *self, PyObject *Py_UNUSED(ignored))
{
    self->stopped = 1;
    Py_RETURN_NONE;
}

static PyObject *Core_monitor(Core *self, PyObject *args);
static PyObject *Core_py_start(Core *self, PyObject *const *args, Py_ssize_t nargs);
static PyObject *Core_py_throw(Core *self, PyObject *const *args, Py_ssize_t nargs);
static PyObject *Core_py_return(Core *self, PyObject *const *args, Py_ssize_t nargs);
static PyObject *Core_py_unwind(Core *self, PyObject *const *args, Py_ssize_t nargs);

static PyMethodDef Core_methods[] = {
    {"monitor", (PyCFunction)Core_monitor, METH_VARARGS,
     "monitor(states, joining, DISABLE, bootstrap_inner_code, bootstrap_code): set up the sys.monitoring callbacks."},
    {"py_start", (PyCFunction)(void (*)(void))Core_py_start, METH_FASTCALL, "PY_START and PY_RESUME: (code, offset)."},
    {"py_throw", (PyCFunction)(void (*)(void))Core_py_throw, METH_FASTCALL, "PY_THROW: (code, offset, exception)."},
    {"py_return", (PyCFunction)(void (*)(void))Core_py_return, METH_FASTCALL, "PY_RETURN and PY_YIELD: (code, offset, value)."},
    {"py_unwind", (PyCFunction)(void (*)(void))Core_py_unwind, METH_FASTCALL, "PY_UNWIND: (code, offset, exception)."},
    {"stop", (PyCFunction)Core_stop, METH_NOARGS,
     "The recording has ended: the threads still running (whose profile function is still set) record nothing more."},
    {"ints", (PyCFunction)Core_ints, METH_NOARGS, "The per-row ints (serial, parent, offset) as native int64 bytes."},
    {"rets", (PyCFunction)Core_rets, METH_NOARGS, "The per-return ints (row, rows so far, offset, size) as native int64 bytes."},
    {NULL}
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dispel.record._ctracer.Core",
    .tp_doc = "What the threads of one recording share: the decisions and the rows.",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
    .tp_members = Core_members,
    .tp_getset = Core_getset,
};

/* ------------------------------------------------------------------ Thread */

static PyTypeObject ThreadType;

/* The shapes of one open call's children (record.fold), counted: open addressing, key 0 empty. */
typedef struct {
    uint64_t *keys;
    Py_ssize_t *counts;
    Py_ssize_t used, cap;
} Shapes;

#define MAX_SHAPES 256  /* record.fold.MAX_SHAPES */

typedef struct Thread {
    PyObject_HEAD
    Core *core;
    int64_t serial;
    PyObject **frames;     /* the stack of recorded calls still running: frame and row */
    Py_ssize_t *rows;
    Py_ssize_t *vat, *rat; /* where each one's values begin, and the returns recorded after its call */
    uint64_t *acc;         /* the hash of each one's children so far (record.fold) */
    Shapes **shapes;       /* each one's children's shapes, counted (NULL until one returns) */
    Py_ssize_t depth, cap;
    char on;               /* sys.monitoring: whether this thread is traced now (not paused) */
} Thread;

static void
shapes_free(Shapes *sh)
{
    if (sh != NULL) {
        PyMem_Free(sh->keys);
        PyMem_Free(sh->counts);
        PyMem_Free(sh);
    }
}

/* Count one more child of ``shape``; how many now, 0 when not counted; -1 on error. */
static Py_ssize_t
shapes_count(Shapes **where, uint64_t shape)
{
    Shapes *sh = *where;
    if (shape == 0) {
        shape = 1;
    }
    if (sh == NULL) {
        sh = *where = PyMem_Calloc(1, sizeof(Shapes));
        if (sh == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    if (2 * (sh->used + 1) > sh->cap) {
        if (sh->used >= MAX_SHAPES) {
            size_t mask = (size_t)sh->cap - 1;
            for (size_t i = (size_t)(shape * 0x9E3779B97F4A7C15ULL) & mask;; i = (i + 1) & mask) {
                if (sh->keys[i] == shape) {
                    return ++sh->counts[i];
                }
                if (sh->keys[i] == 0) {
                    return 0;
                }
            }
        }
        Py_ssize_t cap = sh->cap ? 2 * sh->cap : 8;
        uint64_t *keys = PyMem_Calloc((size_t)cap, sizeof(uint64_t));
        Py_ssize_t *counts = PyMem_Calloc((size_t)cap, sizeof(Py_ssize_t));
        if (keys == NULL || counts == NULL) {
            PyMem_Free(keys);
            PyMem_Free(counts);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t j = 0; j < sh->cap; j++) {
            if (sh->keys[j] != 0) {
                size_t i = (size_t)(sh->keys[j] * 0x9E3779B97F4A7C15ULL) & ((size_t)cap - 1);
                while (keys[i] != 0) {
                    i = (i + 1) & ((size_t)cap - 1);
                }
                keys[i] = sh->keys[j];
                counts[i] = sh->counts[j];
            }
        }
        PyMem_Free(sh->keys);
        PyMem_Free(sh->counts);
        sh->keys = keys;
        sh->counts = counts;
        sh->cap = cap;
    }
    size_t mask = (size_t)sh->cap - 1;
    size_t i = (size_t)(shape * 0x9E3779B97F4A7C15ULL) & mask;
    while (sh->keys[i] != 0 && sh->keys[i] != shape) {
        i = (i + 1) & mask;
    }
    if (sh->keys[i] == 0) {
        sh->keys[i] = shape;
        sh->used++;
    }
    return ++sh->counts[i];
}

static inline uint64_t
mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
    h *= 0xBF58476D1CE4E5B9ULL;
    return h ^ (h >> 31);
}

static void
Thread_dealloc(Thread *self)
{
    for (Py_ssize_t i = 0; i < self->depth; i++) {
        Py_DECREF(self->frames[i]);
        shapes_free(self->shapes[i]);
    }
    PyMem_Free(self->frames);
    PyMem_Free(self->rows);
    PyMem_Free(self->vat);
    PyMem_Free(self->rat);
    PyMem_Free(self->acc);
    PyMem_Free(self->shapes);
    if (self->core != NULL) {
        Core *c = self->core;
        for (Py_ssize_t i = 0; i < c->nthreads; i++) {
            if (c->threads[i] == self) {
                c->threads[i] = c->threads[--c->nthreads];
                break;
            }
        }
    }
    Py_XDECREF(self->core);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Thread_init(Thread *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"core", "serial", NULL};
    PyObject *core;
    long long serial;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!L", kwlist, &CoreType, &core, &serial)) {
        return -1;
    }
    if (self->core != NULL) {
        PyErr_SetString(PyExc_TypeError, "a Thread is made once");
        return -1;
    }
    Core *c = (Core *)core;
    if (c->nthreads == c->threads_cap) {
        Py_ssize_t cap = c->threads_cap ? 2 * c->threads_cap : 16;
        struct Thread **threads = PyMem_Realloc(c->threads, (size_t)cap * sizeof(struct Thread *));
        if (threads == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        c->threads = threads;
        c->threads_cap = cap;
    }
    c->threads[c->nthreads++] = self;
    Py_INCREF(core);
    self->core = c;
    self->serial = serial;
    self->on = 1;
    return 0;
}

/* The recorder must never break the program: report the error and stop tracing. */
static int
fail(Core *c)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (c->profile) {
        PyEval_SetProfile(NULL, NULL);
    }
    PyObject *r = PyObject_CallOneArg(c->on_error, value ? value : Py_None);
    Py_XDECREF(r);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    PyErr_Clear();
    return 0;
}

#define GROW(field, type) do { \
        type *p_ = PyMem_Realloc(t->field, (size_t)cap * sizeof(type)); \
        if (p_ == NULL) { PyErr_NoMemory(); return -1; } \
        t->field = p_; \
    } while (0)

static int
push(Thread *t, PyObject *frame, Py_ssize_t row, Py_ssize_t vat, Py_ssize_t rat)
{
    if (t->depth == t->cap) {
        Py_ssize_t cap = t->cap ? t->cap * 2 : 64;
        GROW(frames, PyObject *);
        GROW(rows, Py_ssize_t);
        GROW(vat, Py_ssize_t);
        GROW(rat, Py_ssize_t);
        GROW(acc, uint64_t);
        GROW(shapes, Shapes *);
        t->cap = cap;
    }
    Py_INCREF(frame);
    t->frames[t->depth] = frame;
    t->rows[t->depth] = row;
    t->vat[t->depth] = vat;
    t->rat[t->depth] = rat;
    t->acc[t->depth] = 0;
    t->shapes[t->depth] = NULL;
    t->depth++;
    return 0;
}

/* Drop the top of ``t``'s stack (its frame reference and its shapes). */
static void
drop_top(Thread *t)
{
    t->depth--;
    Py_DECREF(t->frames[t->depth]);
    shapes_free(t->shapes[t->depth]);
    t->shapes[t->depth] = NULL;
}

/* What is recorded of ``code``'s calls: its argument names (a tuple), or None; borrowed.
 * NULL with an exception set on error. */
static PyObject *
decision(Core *c, PyObject *code)
{
    PyObject *names = table_get(&c->seen, code);
    if (names != NULL) {
        return names;
    }
    names = PyDict_GetItemWithError(c->decisions, code);
    if (names == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        names = PyObject_CallOneArg(c->decide, code);
        if (names == NULL) {
            return NULL;
        }
        Py_DECREF(names);  /* decide stored it in decisions, which keeps it */
    }
    if (names != Py_None && !PyTuple_Check(names)) {
        PyErr_SetString(PyExc_TypeError, "a decision is neither a tuple of names nor None");
        return NULL;
    }
    return table_add(&c->seen, code, names) < 0 ? NULL : names;
}

/* Argument ``i`` of the frame as a new reference; NULL when unbound. The arguments are the
 * first slots of the frame's fast locals (record._arg_names); a captured one is in its cell
 * by the time of a call event (MAKE_CELL comes before RESUME, where PY_START fires). */
static PyObject *
frame_arg(PyFrameObject *frame, Py_ssize_t i)
{
    _PyInterpreterFrame *f = frame->f_frame;
    PyObject *v = f->localsplus[i];
    if (v != NULL && (_PyLocals_GetKind(FRAME_CODE(f)->co_localspluskinds, (int)i) & CO_FAST_CELL) && PyCell_Check(v)) {
        v = PyCell_GET(v);
    }
    Py_XINCREF(v);
    return v;
}

/* A call of wanted code: its row, arguments, and its place on the thread's stack. -1 on error. */
static int
record_call(Thread *t, PyFrameObject *frame, PyObject *code, PyObject *names)
{
    Core *c = t->core;
    Py_ssize_t row = PyList_GET_SIZE(c->codes);
    int64_t ints[3] = {t->serial, -1, 0};
    if (t->depth > 0) {
        ints[1] = t->rows[t->depth - 1];
        ints[2] = PyFrame_GetLasti((PyFrameObject *)t->frames[t->depth - 1]);
    }
    /* on the stack before the callbacks below, which may let another thread fold (and renumber it) */
    if (push(t, (PyObject *)frame, row, PyList_GET_SIZE(c->values), PyList_GET_SIZE(c->ret_values)) < 0) {
        return -1;
    }
    if (PyList_Append(c->codes, code) < 0 || buf_push(&c->ints, ints, 3) < 0) {
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = frame_arg(frame, i);
        int err = PyList_Append(c->values, v ? v : c->missing);
        Py_XDECREF(v);
        if (err < 0) {
            return -1;
        }
    }
    if ((code == c->start_code || code == c->notify_code) && n > 0) {
        /* their first argument (self: the Thread, the Condition) is what the callback needs */
        PyObject *self_arg = PyList_GET_ITEM(c->values, PyList_GET_SIZE(c->values) - n), *r;
        if (code == c->start_code) {
            if (c->barrier < row + 1) {
                c->barrier = row + 1;  /* the new thread is joined to this row */
            }
            PyObject *rowobj = PyLong_FromSsize_t(row);
            if (rowobj == NULL) {
                return -1;
            }
            r = PyObject_CallFunctionObjArgs(c->on_start, self_arg, rowobj, NULL);
            Py_DECREF(rowobj);
        }
        else {
            r = PyObject_CallOneArg(c->on_notify, self_arg);
        }
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

static int
on_call(Thread *t, PyFrameObject *frame)
{
    PyObject *code = (PyObject *)PyFrame_GetCode(frame);
    PyObject *names = decision(t->core, code);
    int err = names == NULL ? -1 : (names == Py_None ? 0 : record_call(t, frame, code, names));
    Py_DECREF(code);
    return err < 0 ? fail(t->core) : 0;
}

/* record.fold, in C: take the call on top of ``t``'s stack (just returned, its return not
 * recorded) and every row under it out of the rows, renumbering the rows other threads
 * recorded since (their ints, returns and open calls); count it under its caller. -1 on error. */
static int
fold(Thread *t)
{
    Core *c = t->core;
    Py_ssize_t top = t->depth - 1;
    Py_ssize_t first = t->rows[top], vfirst = t->vat[top], rfirst = t->rat[top];
    PyListObject *codes = (PyListObject *)c->codes, *values = (PyListObject *)c->values;
    PyListObject *ret_values = (PyListObject *)c->ret_values;
    Py_ssize_t n = Py_SIZE(codes), nv = Py_SIZE(values), nr = Py_SIZE(ret_values);
    int64_t *ints = c->ints.data, *rets = c->rets.data;
    if (first > n || 3 * n > c->ints.len || vfirst > nv || rfirst > nr || 4 * nr > c->rets.len) {
        PyErr_SetString(PyExc_RuntimeError, "fold: the rows are not where the stack says");
        return -1;
    }
    int64_t parent = t->rows[top - 1], offset = ints[3 * first + 2];
    Py_ssize_t hit = c->folded_hit;
    if (hit >= c->nfolded || c->folded[3 * hit] != parent || c->folded[3 * hit + 1] != offset) {
        for (hit = c->nfolded - 1; hit >= 0 && (c->folded[3 * hit] != parent || c->folded[3 * hit + 1] != offset); hit--) {
        }
        if (hit < 0) {
            if (c->nfolded == c->folded_cap) {
                Py_ssize_t cap = c->folded_cap ? 2 * c->folded_cap : 16;
                int64_t *grown = PyMem_Realloc(c->folded, (size_t)(3 * cap) * sizeof(int64_t));
                if (grown == NULL) {
                    PyErr_NoMemory();
                    return -1;
                }
                c->folded = grown;
                c->folded_cap = cap;
            }
            hit = c->nfolded++;
            c->folded[3 * hit] = parent;
            c->folded[3 * hit + 1] = offset;
            c->folded[3 * hit + 2] = 0;
        }
        c->folded_hit = hit;
    }
    c->folded[3 * hit + 2]++;
    Py_ssize_t tail = n - first, rtail = nr - rfirst;
    /* fresh[i]: the new row of old row first + i, -1 when dropped; kept[i]: rows kept before it (+ first) */
    Py_ssize_t *fresh = PyMem_Malloc((size_t)(2 * tail + 1 + 2 * rtail + 1) * sizeof(Py_ssize_t) + 1);
    PyObject *trash = PyList_New(0);  /* what is dropped, let go of once the rows are whole again */
    if (fresh == NULL || trash == NULL) {
        PyMem_Free(fresh);
        Py_XDECREF(trash);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t *kept = fresh + tail, *ret_fresh = kept + tail + 1, *ret_kept = ret_fresh + rtail;
    Py_ssize_t *value_at = NULL;
    Py_ssize_t j = first, vj = vfirst, at = vfirst;
    for (Py_ssize_t r = first; r < n; r++) {
        PyObject *code = codes->ob_item[r];
        PyObject *names = table_get(&c->seen, code);
        Py_ssize_t k = names != NULL && PyTuple_Check(names) ? PyTuple_GET_SIZE(names) : 0;
        kept[r - first] = j;
        if (ints[3 * r] == t->serial) {
            fresh[r - first] = -1;
            if (PyList_Append(trash, code) < 0) {
                goto error;
            }
            Py_DECREF(code);
            for (Py_ssize_t i = 0; i < k; i++) {
                if (PyList_Append(trash, values->ob_item[at + i]) < 0) {
                    goto error;
                }
                Py_DECREF(values->ob_item[at + i]);
            }
        }
        else {
            int64_t parent = ints[3 * r + 1];
            fresh[r - first] = j;
            codes->ob_item[j] = code;
            ints[3 * j] = ints[3 * r];
            ints[3 * j + 1] = parent >= first ? fresh[parent - first] : parent;
            ints[3 * j + 2] = ints[3 * r + 2];
            memmove(values->ob_item + vj, values->ob_item + at, (size_t)k * sizeof(PyObject *));
            vj += k;
            j++;
        }
        at += k;
    }
    kept[tail] = j;
    /* the values where each kept tail row's begin now, for the open calls renumbered below */
    value_at = j > first ? PyMem_Malloc((size_t)(j - first) * sizeof(Py_ssize_t)) : NULL;
    if (j > first && value_at == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    for (Py_ssize_t r = first, v = vfirst; r < j; r++) {
        PyObject *names = table_get(&c->seen, codes->ob_item[r]);
        value_at[r - first] = v;
        v += names != NULL && PyTuple_Check(names) ? PyTuple_GET_SIZE(names) : 0;
    }
    for (Py_ssize_t r = j; r < n; r++) {
        codes->ob_item[r] = NULL;
    }
    Py_SET_SIZE(codes, j);
    c->ints.len = 3 * j;
    for (Py_ssize_t i = vj; i < nv; i++) {
        values->ob_item[i] = NULL;
    }
    Py_SET_SIZE(values, vj);
    Py_ssize_t rj = rfirst;
    for (Py_ssize_t i = rfirst; i < nr; i++) {
        int64_t row = rets[4 * i], seq = rets[4 * i + 1];
        ret_kept[i - rfirst] = rj;
        if (row >= first && fresh[row - first] < 0) {
            ret_fresh[i - rfirst] = -1;
            if (PyList_Append(trash, ret_values->ob_item[i]) < 0) {
                goto error;
            }
            Py_DECREF(ret_values->ob_item[i]);
            continue;
        }
        ret_fresh[i - rfirst] = rj;
        rets[4 * rj] = row >= first ? fresh[row - first] : row;
        rets[4 * rj + 1] = seq >= first ? kept[seq - first] : seq;
        rets[4 * rj + 2] = rets[4 * i + 2];
        rets[4 * rj + 3] = rets[4 * i + 3];
        ret_values->ob_item[rj] = ret_values->ob_item[i];
        rj++;
    }
    ret_kept[rtail] = rj;
    for (Py_ssize_t i = rj; i < nr; i++) {
        ret_values->ob_item[i] = NULL;
    }
    Py_SET_SIZE(ret_values, rj);
    c->rets.len = 4 * rj;
    /* the open calls of every thread recorded since (none when no other thread recorded) */
    for (Py_ssize_t ti = 0; j > first && ti < c->nthreads; ti++) {
        Thread *o = c->threads[ti];
        for (Py_ssize_t d = o->depth - 1; d >= 0 && o->rows[d] >= first; d--) {
            Py_ssize_t row = fresh[o->rows[d] - first];
            if (row < 0) {  /* the folded call itself, still on t's stack */
                continue;
            }
            o->rows[d] = row;
            o->vat[d] = value_at[row - first];
            o->rat[d] = o->rat[d] >= rfirst ? ret_kept[o->rat[d] - rfirst] : o->rat[d];
        }
    }
    /* the counts of calls folded under calls recorded since */
    Py_ssize_t fj = 0;  /* the places under a call taken out go with it */
    for (Py_ssize_t i = 0; i < c->nfolded; i++) {
        int64_t p = c->folded[3 * i];
        if (p >= first && p < n && (p = fresh[p - first]) < 0) {
            continue;
        }
        c->folded[3 * fj] = p;
        c->folded[3 * fj + 1] = c->folded[3 * i + 1];
        c->folded[3 * fj + 2] = c->folded[3 * i + 2];
        fj++;
    }
    c->nfolded = fj;
    c->folded_hit = 0;
    PyMem_Free(value_at);
    PyMem_Free(fresh);
    Py_DECREF(trash);
    return 0;
error:
    PyMem_Free(value_at);
    PyMem_Free(fresh);
    Py_DECREF(trash);
    return -1;
}

/* A return (arg NULL: the frame is left by an exception) of a recorded call. -1 on error. */
static int
on_return(Thread *t, PyFrameObject *frame, PyObject *arg)
{
    Core *c = t->core;
    Py_ssize_t i = t->depth - 1;
    while (i >= 0 && t->frames[i] != (PyObject *)frame) {
        i--;
    }
    if (i < 0) {
        return 0;  /* not a recorded call */
    }
    /* calls above it that never returned (as the Python core pops them) */
    Py_ssize_t left = t->depth - 1 - i;
    while (t->depth - 1 > i) {
        drop_top(t);
    }
    PyCodeObject *code = PyFrame_GetCode(frame);
    if ((PyObject *)code == c->wait_code) {
        /* may let another thread fold, and renumber this stack: its rows are read after it */
        PyObject *self_arg = frame_arg(frame, 0);  /* the Condition */
        PyObject *r = PyObject_CallOneArg(c->on_woken, self_arg ? self_arg : Py_None);
        Py_XDECREF(self_arg);
        if (r == NULL) {
            Py_DECREF(code);
            return -1;
        }
        Py_DECREF(r);
    }
    Py_ssize_t row = t->rows[i];
    /* the rows so far place the return in the global order of calls */
    int64_t rets[4] = {row, PyList_GET_SIZE(c->codes), PyFrame_GetLasti(frame), -1};
    PyObject *value = c->raised;  /* arg is NULL when the frame is left by an exception */
    if (arg != NULL) {
        value = arg;
        if (PyList_CheckExact(arg) || PyTuple_CheckExact(arg) || PyDict_CheckExact(arg) || PySet_CheckExact(arg)) {
            rets[3] = PyObject_Size(arg);
        }
    }
    if (i > 0) {  /* record.fold: this call's shape, counted under its caller */
        uint64_t shape = mix(mix(mix(mix(mix((uint64_t)(uintptr_t)code, (uint64_t)c->ints.data[3 * row + 2]),
                                             (uint64_t)rets[2]), (uint64_t)((rets[3] > 0) - (rets[3] < 0))),
                                 t->acc[i]), (uint64_t)left);
        t->acc[i - 1] = mix(t->acc[i - 1], shape);
        Py_ssize_t count = shapes_count(&t->shapes[i - 1], shape);
        if (count < 0) {
            Py_DECREF(code);
            return -1;
        }
        if (count > c->fold_after && row >= c->barrier) {
            Py_DECREF(code);
            int err = fold(t);
            drop_top(t);
            return err;
        }
    }
    Py_DECREF(code);
    PyObject *f = t->frames[i];  /* our reference, dropped below */
    t->depth--;
    shapes_free(t->shapes[i]);
    t->shapes[i] = NULL;
    if (buf_push(&c->rets, rets, 4) < 0 || PyList_Append(c->ret_values, value) < 0) {
        Py_DECREF(f);
        return -1;
    }
    Py_DECREF(f);
    return 0;
}

static int
profile(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    if (((Thread *)obj)->core->stopped) {
        return 0;
    }
    if (what == PyTrace_CALL) {
        return on_call((Thread *)obj, frame);
    }
    if (what == PyTrace_RETURN) {
        return on_return((Thread *)obj, frame, arg) < 0 ? fail(((Thread *)obj)->core) : 0;
    }
    return 0;
}

static PyObject *
Thread_install(Thread *self, PyObject *Py_UNUSED(ignored))
{
    self->core->profile = 1;
    PyEval_SetProfile(profile, (PyObject *)self);
    Py_RETURN_NONE;
}

static PyMethodDef Thread_methods[] = {
    {"install", (PyCFunction)Thread_install, METH_NOARGS, "Record the calling thread's calls from now on."},
    {NULL}
};

/* ------------------------------------------------------------------ sys.monitoring (3.12+) */

/* Which Thread a thread has is looked up once and then kept in a thread-local slot until
 * the states dict changes: a dict watcher counts every change of a watched states dict
 * (the callback runs, with the GIL held, before the change is made), so a slot of an older
 * version is looked up again. Without it every event allocated the thread ident as an int
 * and looked it up in the dict. A new OS thread starts with an empty slot, so a reused
 * ident finds nothing stale. */
static _Thread_local struct {
    uint64_t version;  /* states_version when looked up (0: never) */
    Core *core;        /* whose states dict */
    PyObject *thread;  /* the Thread (borrowed: the dict holds it) or NULL */
} here;

#if PY_VERSION_HEX >= 0x030C0000
static int
states_changed(PyDict_WatchEvent event, PyObject *dict, PyObject *key, PyObject *new_value)
{
    (void)event, (void)dict, (void)key, (void)new_value;
    states_version++;
    return 0;
}
#endif

static PyObject *
Core_monitor(Core *self, PyObject *args)
{
    PyObject *states, *joining, *disable, *boot, *boot_outer;
    if (!PyArg_ParseTuple(args, "O!OOOO", &PyDict_Type, &states, &joining, &disable, &boot, &boot_outer)) {
        return NULL;
    }
    Py_XSETREF(self->states, Py_NewRef(states));
    Py_XSETREF(self->joining, Py_NewRef(joining));
    Py_XSETREF(self->disable, Py_NewRef(disable));
    Py_XSETREF(self->boot, Py_NewRef(boot));
    Py_XSETREF(self->boot_outer, Py_NewRef(boot_outer));
#if PY_VERSION_HEX >= 0x030C0000
    if (states_watcher < 0 && (states_watcher = PyDict_AddWatcher(states_changed)) < 0) {
        return NULL;
    }
    if (PyDict_Watch(states_watcher, states) < 0) {
        return NULL;
    }
#endif
    states_version++;
    Py_RETURN_NONE;
}

static PyObject *str_started, *str_flag;  /* "_started", "_flag" */

/* Whether joining() may attach the thread of ``frame``, a wanted call on a thread without
 * a Thread: only when it is called by Thread._bootstrap_inner once the Thread has said it
 * started (thread._started._flag). A filter in front of joining(), which decides, so that
 * the calls _bootstrap_inner makes before that do not each call into Python; whatever it
 * cannot read is left to joining(). */
static int
may_join(Core *c, PyFrameObject *frame)
{
    PyFrameObject *back = PyFrame_GetBack(frame);
    if (back == NULL) {
        return 0;
    }
    int may = 0;
    PyCodeObject *code = PyFrame_GetCode(back);
    if ((PyObject *)code == c->boot) {
        PyObject *thread = frame_arg(back, 0), *started = NULL, *flag = NULL;
        may = thread == NULL || (started = PyObject_GetAttr(thread, str_started)) == NULL ||
              (flag = PyObject_GetAttr(started, str_flag)) == NULL || flag != Py_False;
        PyErr_Clear();
        Py_XDECREF(flag);
        Py_XDECREF(started);
        Py_XDECREF(thread);
    }
    Py_DECREF(code);
    Py_DECREF(back);
    return may;
}

/* The calling thread's Thread if it is traced now (borrowed), else NULL; NULL with an
 * exception set on error. ``join``: a thread with none may get one (joining()). */
static Thread *
current_thread(Core *c, PyObject *code, PyFrameObject *frame, int join)
{
    PyObject *t = here.thread;
    if (here.version != states_version || here.core != c || PY_VERSION_HEX < 0x030C0000) {  /* 3.11: no watcher */
        PyObject *key = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
        if (key == NULL) {
            return NULL;
        }
        t = PyDict_GetItemWithError(c->states, key);
        Py_DECREF(key);
        if (t == NULL && PyErr_Occurred()) {
            return NULL;
        }
        here.version = states_version;
        here.core = c;
        here.thread = t;
    }
    int bootstrap = code == c->boot || code == c->boot_outer;
    if (join && (bootstrap || (t == NULL && may_join(c, frame)))) {
        PyObject *r = PyObject_CallFunctionObjArgs(c->joining, code, (PyObject *)frame, NULL);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);  /* states keeps a new thread's Thread */
        t = r == Py_None ? NULL : r;
    }
    if (t == NULL || !PyObject_TypeCheck(t, &ThreadType) || !((Thread *)t)->on) {
        return NULL;
    }
    return (Thread *)t;
}

static PyObject *
monitor_result(Core *c, PyObject *names, int may_disable)
{
    if (names == Py_None && may_disable) {
        return Py_NewRef(c->disable);  /* never again for this code, on any thread */
    }
    Py_RETURN_NONE;
}

static PyObject *
enter(Core *c, PyObject *const *args, Py_ssize_t nargs, int may_disable)
{
    if (nargs < 2 || c->states == NULL) {
        PyErr_SetString(PyExc_TypeError, "a sys.monitoring call event takes (code, offset, ...), after Core.monitor()");
        return NULL;
    }
    if (c->stopped) {
        Py_RETURN_NONE;
    }
    PyObject *code = args[0];
    PyObject *names = decision(c, code);
    if (names == NULL) {
        goto error;
    }
    if (names != Py_None) {
        PyFrameObject *frame = PyEval_GetFrame();  /* the monitored frame: a C callback adds none */
        if (frame != NULL) {
            Thread *t = current_thread(c, code, frame, 1);
            if (t == NULL ? PyErr_Occurred() != NULL : record_call(t, frame, code, names) < 0) {
                goto error;
            }
        }
    }
    return monitor_result(c, names, may_disable);
error:
    fail(c);
    Py_RETURN_NONE;
}

static PyObject *
leave(Core *c, PyObject *code, PyObject *value, int may_disable)
{
    if (c->stopped) {
        Py_RETURN_NONE;
    }
    PyObject *names = decision(c, code);
    if (names == NULL) {
        goto error;
    }
    if (names != Py_None) {
        PyFrameObject *frame = PyEval_GetFrame();
        if (frame != NULL) {
            Thread *t = current_thread(c, code, frame, 0);
            if (t == NULL ? PyErr_Occurred() != NULL : on_return(t, frame, value) < 0) {
                goto error;
            }
        }
    }
    return monitor_result(c, names, may_disable);
error:
    fail(c);
    Py_RETURN_NONE;
}

static PyObject *
Core_py_start(Core *self, PyObject *const *args, Py_ssize_t nargs)
{
    return enter(self, args, nargs, 1);
}

static PyObject *
Core_py_throw(Core *self, PyObject *const *args, Py_ssize_t nargs)
{
    return enter(self, args, nargs, 0);  /* not a local event: DISABLE is not allowed */
}

static PyObject *
Core_py_return(Core *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 3 || self->states == NULL) {
        PyErr_SetString(PyExc_TypeError, "a sys.monitoring return event takes (code, offset, value), after Core.monitor()");
        return NULL;
    }
    return leave(self, args[0], args[2], 1);
}

static PyObject *
Core_py_unwind(Core *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 3 || self->states == NULL) {
        PyErr_SetString(PyExc_TypeError, "a sys.monitoring unwind event takes (code, offset, exception), after Core.monitor()");
        return NULL;
    }
    return leave(self, args[0], NULL, 0);  /* NULL: left by an exception */
}

static PyMemberDef Thread_members[] = {
    {"on", T_BOOL, offsetof(Thread, on), 0, "Whether sys.monitoring events of this thread are recorded now."},
    {NULL}
};

static PyTypeObject ThreadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dispel.record._ctracer.Thread",
    .tp_doc = "One thread's profile function and its stack of recorded calls.",
    .tp_basicsize = sizeof(Thread),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Thread_init,
    .tp_dealloc = (destructor)Thread_dealloc,
    .tp_methods = Thread_methods,
    .tp_members = Thread_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "dispel.record._ctracer",
    .m_doc = "The C core of dispel's recorder.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__ctracer(void)
{
    if ((str_started = PyUnicode_InternFromString("_started")) == NULL ||
        (str_flag = PyUnicode_InternFromString("_flag")) == NULL) {
        return NULL;
    }
    if (PyType_Ready(&CoreType) < 0 || PyType_Ready(&ThreadType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&CoreType);
    Py_INCREF(&ThreadType);
    if (PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0 ||
        PyModule_AddObject(m, "Thread", (PyObject *)&ThreadType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
