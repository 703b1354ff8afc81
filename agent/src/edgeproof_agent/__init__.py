"""The edgeproof device agent: verbs over versioned JSON-lines on stdin/stdout, no code execution.

Run ``edgeproof-agent`` on a board (``ssh board edgeproof-agent``); the lab side (``edgeproof``) sends
one request per line and reads one reply per line. See ``_serve.py`` for the verbs.
"""

__version__ = "0.1.0"

# The wire protocol's version: a lab side speaking another version is refused at `hello`.
PROTOCOL = 1

__all__ = ["PROTOCOL", "__version__"]
