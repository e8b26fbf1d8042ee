"""Tiny multi-threaded programs that the recorder and the chain joiner are tested on."""
