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
#include <frameobject.h>
#include <stdint.h>
#include <string.h>

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
    PyObject *on_start;    /* on_start(locals, row) */
    PyObject *on_notify;   /* on_notify(locals) */
    PyObject *on_woken;    /* on_woken(frame) */
    PyObject *on_error;    /* on_error(exception) */
    I64Buf ints;           /* serial, parent row, offset in parent: per row */
    I64Buf rets;           /* row, rows so far, offset, size: per return */
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
    return 0;
}

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

static PyMethodDef Core_methods[] = {
    {"ints", (PyCFunction)Core_ints, METH_NOARGS, "The per-row ints (serial, parent, offset) as native int64 bytes."},
    {"rets", (PyCFunction)Core_rets, METH_NOARGS, "The per-return ints (row, rows so far, offset, size) as native int64 bytes."},
    {NULL}
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dispel._ctracer.Core",
    .tp_doc = "What the threads of one recording share: the decisions and the rows.",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
};

/* ------------------------------------------------------------------ Thread */

typedef struct {
    PyObject_HEAD
    Core *core;
    int64_t serial;
    PyObject **frames;     /* the stack of recorded calls still running: frame and row */
    Py_ssize_t *rows;
    Py_ssize_t depth, cap;
} Thread;

static void
Thread_dealloc(Thread *self)
{
    for (Py_ssize_t i = 0; i < self->depth; i++) {
        Py_DECREF(self->frames[i]);
    }
    PyMem_Free(self->frames);
    PyMem_Free(self->rows);
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
    Py_INCREF(core);
    Py_XSETREF(self->core, (Core *)core);
    self->serial = serial;
    return 0;
}

/* The recorder must never break the program: report the error and stop tracing. */
static int
fail(Thread *t)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyEval_SetProfile(NULL, NULL);
    PyObject *r = PyObject_CallOneArg(t->core->on_error, value ? value : Py_None);
    Py_XDECREF(r);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    PyErr_Clear();
    return 0;
}

static int
push(Thread *t, PyObject *frame, Py_ssize_t row)
{
    if (t->depth == t->cap) {
        Py_ssize_t cap = t->cap ? t->cap * 2 : 64;
        PyObject **frames = PyMem_Realloc(t->frames, (size_t)cap * sizeof(PyObject *));
        if (frames == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->frames = frames;
        Py_ssize_t *rows = PyMem_Realloc(t->rows, (size_t)cap * sizeof(Py_ssize_t));
        if (rows == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->rows = rows;
        t->cap = cap;
    }
    Py_INCREF(frame);
    t->frames[t->depth] = frame;
    t->rows[t->depth] = row;
    t->depth++;
    return 0;
}

static int
on_call(Thread *t, PyFrameObject *frame)
{
    Core *c = t->core;
    PyCodeObject *code = PyFrame_GetCode(frame);
    PyObject *names = PyDict_GetItemWithError(c->decisions, (PyObject *)code);
    if (names == NULL) {
        if (PyErr_Occurred()) {
            goto error;
        }
        names = PyObject_CallOneArg(c->decide, (PyObject *)code);
        if (names == NULL) {
            goto error;
        }
        Py_DECREF(names);  /* decide stored it in decisions, which keeps it */
    }
    if (names == Py_None) {
        Py_DECREF(code);
        return 0;
    }
    if (!PyTuple_Check(names)) {
        PyErr_SetString(PyExc_TypeError, "a decision is neither a tuple of names nor None");
        goto error;
    }
    Py_ssize_t row = PyList_GET_SIZE(c->codes);
    int64_t ints[3] = {t->serial, -1, 0};
    if (t->depth > 0) {
        ints[1] = t->rows[t->depth - 1];
        ints[2] = PyFrame_GetLasti((PyFrameObject *)t->frames[t->depth - 1]);
    }
    PyObject *loc = PyFrame_GetLocals(frame);
    if (loc == NULL) {
        goto error;
    }
    if (PyList_Append(c->codes, (PyObject *)code) < 0 || buf_push(&c->ints, ints, 3) < 0) {
        Py_DECREF(loc);
        goto error;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyDict_Check(loc) ? PyDict_GetItemWithError(loc, PyTuple_GET_ITEM(names, i))
                                        : NULL;
        if (v == NULL && PyErr_Occurred()) {
            Py_DECREF(loc);
            goto error;
        }
        if (PyList_Append(c->values, v ? v : c->missing) < 0) {
            Py_DECREF(loc);
            goto error;
        }
    }
    PyObject *r = NULL;
    if ((PyObject *)code == c->start_code) {
        PyObject *rowobj = PyLong_FromSsize_t(row);
        if (rowobj != NULL) {
            r = PyObject_CallFunctionObjArgs(c->on_start, loc, rowobj, NULL);
            Py_DECREF(rowobj);
        }
        if (r == NULL) {
            Py_DECREF(loc);
            goto error;
        }
        Py_DECREF(r);
    }
    else if ((PyObject *)code == c->notify_code) {
        r = PyObject_CallOneArg(c->on_notify, loc);
        if (r == NULL) {
            Py_DECREF(loc);
            goto error;
        }
        Py_DECREF(r);
    }
    Py_DECREF(loc);
    Py_DECREF(code);
    if (push(t, (PyObject *)frame, row) < 0) {
        return fail(t);
    }
    return 0;
error:
    Py_DECREF(code);
    return fail(t);
}

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
    while (t->depth - 1 > i) {
        t->depth--;
        Py_DECREF(t->frames[t->depth]);
    }
    t->depth--;
    Py_ssize_t row = t->rows[i];
    PyObject *f = t->frames[i];  /* our reference, dropped at the end */
    PyCodeObject *code = PyFrame_GetCode(frame);
    if ((PyObject *)code == c->wait_code) {
        PyObject *r = PyObject_CallOneArg(c->on_woken, (PyObject *)frame);
        if (r == NULL) {
            Py_DECREF(code);
            Py_DECREF(f);
            return fail(t);
        }
        Py_DECREF(r);
    }
    Py_DECREF(code);
    /* the rows so far place the return in the global order of calls */
    int64_t rets[4] = {row, PyList_GET_SIZE(c->codes), PyFrame_GetLasti(frame), -1};
    PyObject *value = c->raised;  /* arg is NULL when the frame is left by an exception */
    if (arg != NULL) {
        value = arg;
        if (PyList_CheckExact(arg) || PyTuple_CheckExact(arg) || PyDict_CheckExact(arg) || PySet_CheckExact(arg)) {
            rets[3] = PyObject_Size(arg);
        }
    }
    if (buf_push(&c->rets, rets, 4) < 0 || PyList_Append(c->ret_values, value) < 0) {
        Py_DECREF(f);
        return fail(t);
    }
    Py_DECREF(f);
    return 0;
}

static int
profile(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    if (what == PyTrace_CALL) {
        return on_call((Thread *)obj, frame);
    }
    if (what == PyTrace_RETURN) {
        return on_return((Thread *)obj, frame, arg);
    }
    return 0;
}

static PyObject *
Thread_install(Thread *self, PyObject *Py_UNUSED(ignored))
{
    PyEval_SetProfile(profile, (PyObject *)self);
    Py_RETURN_NONE;
}

static PyMethodDef Thread_methods[] = {
    {"install", (PyCFunction)Thread_install, METH_NOARGS, "Record the calling thread's calls from now on."},
    {NULL}
};

static PyTypeObject ThreadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dispel._ctracer.Thread",
    .tp_doc = "One thread's profile function and its stack of recorded calls.",
    .tp_basicsize = sizeof(Thread),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Thread_init,
    .tp_dealloc = (destructor)Thread_dealloc,
    .tp_methods = Thread_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "dispel._ctracer",
    .m_doc = "The C core of dispel's recorder.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__ctracer(void)
{
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
