"""`python -m dispel`: the same as the `dispel` command."""
import os
import sys

# `python -m` puts the working directory first on sys.path, where a user's app may have a file
# named like a standard-library module (queue.py): dispel's own imports must not find it. A
# scenario file's app is put on sys.path by the recording itself, after it checked for those.
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from .cli import main  # imported after the path is fixed

sys.exit(main())
