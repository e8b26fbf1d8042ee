"""`python -m dispel`: the same as the `dispel` command."""
import os
import sys

# `python -m` puts the working directory first on sys.path, where a user's app may have a file
# named like a standard-library module (queue.py): dispel's own imports must not find it. A
# scenario file's app is put on sys.path by the recording itself, after it checked for those.
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

# DISPEL_GEVENT=1: this process runs an app in gevent mode. It is monkey-patched first, as a gunicorn
# gevent worker patches before it loads its app, with gevent's pure-Python modules (PURE_PYTHON=1), whose
# Queue.put, Event.set and hub are Python calls the recorder sees and the report links to.
if os.environ.get("DISPEL_GEVENT") == "1":
    os.environ["PURE_PYTHON"] = "1"
    from gevent import monkey

    monkey.patch_all()

from .cli import main  # imported after the path is fixed

sys.exit(main())
