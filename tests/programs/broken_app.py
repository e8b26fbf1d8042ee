"""An app module that fails to import (a bad-input case for `dispel record --app`)."""
raise ImportError("this app is broken on purpose")
