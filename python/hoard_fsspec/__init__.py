"""fsspec filesystem ``hoard://``: read any version of a hoard dataset through
hoardd's HTTP gateway, a byte range at a time, without a checkout.

Paths are ``NAME[@REV]/PATH`` (REV: a tag, an id prefix, ``~N`` or a full
snapshot id; none: the latest snapshot) or ``blake3:<id>`` (a file by id).
The gateway's URL grammar is documented in hoard's ``daemon/src/gateway``.
"""

from .core import HoardFileSystem, HoardFile, default_url

__all__ = ["HoardFileSystem", "HoardFile", "default_url"]
