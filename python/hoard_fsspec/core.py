"""The ``hoard`` fsspec filesystem over hoardd's HTTP gateway (pure Python)."""

import http.client
import json
import os
import ssl
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import fsspec.caching
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

DEFAULT_URL = "http://127.0.0.1:7421"
# Retries of an answer that says "try again" (503) or of a dropped
# keep-alive connection.
RETRIES = 3
# Ranges fetched at once by cat_ranges.
PARALLEL_RANGES = 8


def _config_listen():
    """The [http] listen address in the local daemon's config.toml, if any."""
    home = os.environ.get("HOARD_HOME")
    if home:
        path = os.path.join(home, "config.toml")
    else:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(
            os.path.expanduser("~"), ".config"
        )
        path = os.path.join(base, "hoard", "config.toml")
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        return None
    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except (OSError, ValueError):
        return None
    http = cfg.get("http") or {}
    listen = http.get("listen")
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::", ""):
        host = "127.0.0.1"
    scheme = "https" if http.get("tls") or http.get("tls_cert") else "http"
    return f"{scheme}://{host}:{port}"


def default_url():
    """$HOARD_URL, else the local daemon's gateway ([http] listen in its
    config.toml), else http://127.0.0.1:7421."""
    return os.environ.get("HOARD_URL") or _config_listen() or DEFAULT_URL


class HoardError(OSError):
    pass


def _raise_for(status, body, what):
    msg = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
    msg = f"{what}: {msg}"
    if status == 404:
        raise FileNotFoundError(msg)
    if status in (401, 403):
        raise PermissionError(msg)
    if status == 400:
        raise ValueError(msg)
    raise HoardError(msg)


class HoardFileSystem(AbstractFileSystem):
    """Read-only filesystem of hoard dataset snapshots.

    ``url`` (or ``gateway``: pandas passes storage options to
    ``fsspec.core.url_to_fs(url, **options)``, where ``url`` is taken): the
    gateway (default: :func:`default_url`); ``token``: a read
    token (default ``$HOARD_TOKEN``; needed off loopback); ``ca``: a CA or
    the hub's self-signed certificate for https (default ``$HOARD_CA``);
    ``timeout``: seconds per request.
    """

    protocol = "hoard"
    root_marker = ""

    def __init__(self, url=None, token=None, ca=None, timeout=300, gateway=None, **kwargs):
        super().__init__(url=url, token=token, ca=ca, timeout=timeout, gateway=gateway, **kwargs)
        self.url = (url or gateway or default_url()).rstrip("/")
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                f"hoard gateway url {self.url!r} is not http(s)://HOST:PORT"
            )
        self._scheme = parsed.scheme
        self._host = parsed.hostname
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self._base = parsed.path.rstrip("/")
        self.token = token if token is not None else os.environ.get("HOARD_TOKEN")
        self.ca = ca if ca is not None else os.environ.get("HOARD_CA")
        self.timeout = timeout
        self._local = threading.local()

    # -- paths ---------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        for prefix in ("hoard://", "hoard::"):
            if path.startswith(prefix):
                path = path[len(prefix):]
        return path.strip("/")

    def unstrip_protocol(self, name):
        return "hoard://" + name

    def _url_path(self, path):
        path = self._strip_protocol(path)
        if path.startswith("blake3:"):
            return f"{self._base}/v1/files/{path}"
        if not path:
            return f"{self._base}/v1/datasets"
        parts = path.split("/")
        quoted = [urllib.parse.quote(p, safe="@~") for p in parts]
        return f"{self._base}/v1/datasets/" + "/".join(quoted)

    # -- HTTP ----------------------------------------------------------

    def _connection(self, fresh=False):
        conn = getattr(self._local, "conn", None)
        # A forked child (a DataLoader worker, multiprocessing) must not
        # share its parent's socket: answers would interleave.
        if conn is not None and getattr(self._local, "pid", None) != os.getpid():
            conn, self._local.conn = None, None
        if conn is not None and not fresh:
            return conn
        if conn is not None:
            conn.close()
        if self._scheme == "https":
            ctx = ssl.create_default_context(cafile=self.ca) if self.ca else ssl.create_default_context()
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=ctx
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def _request(self, method, path, headers=None):
        """(status, headers, body) of one request, retried on a dropped
        keep-alive connection or a 503."""
        url = self._url_path(path)
        h = {"Accept-Encoding": "identity"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(headers or {})
        delay = 0.2
        for attempt in range(RETRIES + 1):
            conn = self._connection(fresh=attempt > 0)
            try:
                conn.request(method, url, headers=h)
                r = conn.getresponse()
                body = r.read()
            except (http.client.HTTPException, ConnectionError, OSError) as e:
                conn.close()
                self._local.conn = None
                if attempt == RETRIES:
                    raise HoardError(
                        f"cannot reach the hoard gateway at {self.url} ({e}); is hoardd serving it? (`[http] listen` in config.toml, or `hoardd run --http ADDR`)"
                    ) from e
                continue
            if r.status == 503 and attempt < RETRIES:
                time.sleep(delay)
                delay *= 2
                continue
            return r.status, r.headers, body
        raise HoardError(f"the hoard gateway at {self.url} kept answering 503")

    # -- the filesystem ------------------------------------------------

    def info(self, path, **kwargs):
        path = self._strip_protocol(path)
        status, headers, body = self._request("HEAD", path)
        if status != 200:
            # HEAD carries no message: ask again for it.
            status, headers, body = self._request("GET", path, {"Range": "bytes=0-0"})
            if status not in (200, 206):
                _raise_for(status, body, f"hoard://{path}")
        kind = headers.get("X-Hoard-Kind", "file")
        if kind == "dir":
            return {"name": path, "size": 0, "type": "directory"}
        etag = (headers.get("ETag") or "").strip('"')
        size = int(headers.get("Content-Length", "0"))
        info = {"name": path, "size": size, "type": "file", "id": etag, "kind": kind}
        if headers.get("X-Hoard-Snapshot"):
            info["snapshot"] = headers["X-Hoard-Snapshot"]
        return info

    def ls(self, path, detail=True, **kwargs):
        path = self._strip_protocol(path)
        cached = self.dircache.get(path) if not kwargs.get("refresh") else None
        if cached is None:
            cached = self._list(path)
            if cached is not None and self._cacheable(path):
                self.dircache[path] = cached
        if cached is None:  # a file
            entries = [self.info(path)]
        else:
            entries = cached
        return entries if detail else [e["name"] for e in entries]

    def _cacheable(self, path):
        """Listings of an immutable snapshot (named by its full id) do not
        change; others (a tag, the latest) may."""
        spec = path.split("/", 1)[0]
        rev = spec.partition("@")[2]
        return len(rev) == 64

    def _list(self, path):
        # HEAD first: a file's GET would bring the whole file.
        status, headers, body = self._request("HEAD", path)
        if status == 200 and headers.get("X-Hoard-Kind", "file") != "dir":
            return None
        status, headers, body = self._request("GET", path, {"Range": "bytes=0-0"})
        if headers.get("X-Hoard-Kind", "file") != "dir" or status != 200:
            if status in (200, 206, 416):
                return None
            _raise_for(status, body, f"hoard://{path}")
        doc = json.loads(body)
        if doc.get("kind") == "datasets":
            return [
                {"name": d["name"], "size": 0, "type": "directory", "head": d.get("head")}
                for d in doc["datasets"]
            ]
        out = []
        for e in doc["entries"]:
            name = f"{path}/{e['name']}"
            if e["kind"] == "dir":
                out.append({"name": name, "size": 0, "type": "directory", "id": e["id"]})
            else:
                out.append(
                    {"name": name, "size": e["size"], "type": "file", "id": e["id"], "kind": e["kind"]}
                )
        return out

    def ukey(self, path):
        return self.info(path).get("id") or path

    def cat_file(self, path, start=None, end=None, **kwargs):
        path = self._strip_protocol(path)
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = self.info(path)["size"]
            start = max(0, size + start) if start is not None and start < 0 else start
            end = max(0, size + end) if end is not None and end < 0 else end
        start = start or 0
        if end is not None and end <= start:
            return b""
        headers = {}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        status, h, body = self._request("GET", path, headers)
        if status == 416:
            return b""
        if status not in (200, 206):
            _raise_for(status, body, f"hoard://{path}")
        if h.get("X-Hoard-Kind") == "dir":
            raise IsADirectoryError(f"hoard://{path} is a directory")
        want = None if end is None else end - start
        if status == 206:
            got = h.get("Content-Range", "")
            first = got.split(" ", 1)[-1].split("-", 1)[0]
            if not first.isdigit() or int(first) != start:
                raise HoardError(f"hoard://{path}: asked for bytes from {start}, the gateway answered {got!r}")
        if status == 200 and (start or end is not None):
            body = body[start:end]
        if want is not None and len(body) > want:
            body = body[:want]
        return body

    def cat_ranges(self, paths, starts, ends, max_gap=None, on_error="return", **kwargs):
        if not isinstance(starts, list):
            starts = [starts] * len(paths)
        if not isinstance(ends, list):
            ends = [ends] * len(paths)

        def one(args):
            p, s, e = args
            try:
                return self.cat_file(p, s, e)
            except Exception as ex:
                if on_error == "return":
                    return ex
                raise

        if len(paths) <= 1:
            return [one(a) for a in zip(paths, starts, ends)]
        with ThreadPoolExecutor(min(PARALLEL_RANGES, len(paths))) as pool:
            return list(pool.map(one, zip(paths, starts, ends)))

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        if mode != "rb":
            raise NotImplementedError("hoard:// is read-only: record new versions with `hoard snapshot`")
        details = self.info(path)
        if details["type"] != "file":
            raise IsADirectoryError(f"hoard://{self._strip_protocol(path)} is a directory")
        return HoardFile(
            self,
            path,
            mode,
            block_size=block_size or "default",
            cache_options=cache_options,
            details=details,
            **kwargs,
        )

    # A read-only filesystem.
    def _readonly(self, *args, **kwargs):
        raise NotImplementedError("hoard:// is read-only: record new versions with `hoard snapshot`")

    mkdir = makedirs = rm = rm_file = rmdir = mv = cp_file = put_file = pipe_file = touch = _readonly


class AdaptiveReadahead(fsspec.caching.BaseCache):
    """Reads exactly what is asked for when reads jump around (Parquet
    footers and column chunks), and reads ahead, doubling up to the block
    size, while they run on sequentially (a CSV or a whole-file read)."""

    name = "hoard"

    def __init__(self, blocksize, fetcher, size, **kwargs):
        super().__init__(blocksize, fetcher, size)
        self.buf = b""
        self.start = 0
        self.ahead = 0
        self.last_end = None

    def _fetch(self, start, end):
        if start is None:
            start = 0
        if end is None or end > self.size:
            end = self.size
        if start >= end:
            return b""
        bstart, bend = self.start, self.start + len(self.buf)
        if bstart <= start and end <= bend:
            self.last_end = end
            return self.buf[start - bstart:end - bstart]
        if self.last_end is not None and start == self.last_end:
            self.ahead = min(max(2 * self.ahead, 256 << 10), self.blocksize)
        else:
            self.ahead = 0
        have = b""
        if bstart <= start < bend:
            # The buffer's tail, then the rest.
            have = self.buf[start - bstart:]
            fetch_from = bend
        else:
            fetch_from = start
        fetch_to = min(self.size, end + self.ahead)
        got = self.fetcher(fetch_from, fetch_to)
        self.buf = have + got
        self.start = start
        self.last_end = end
        return self.buf[:end - start]


try:
    fsspec.caching.register_cache(AdaptiveReadahead, clobber=True)
except (AttributeError, TypeError):
    fsspec.caching.caches[AdaptiveReadahead.name] = AdaptiveReadahead


class HoardFile(AbstractBufferedFile):
    """A file of a snapshot, read by ranges of that snapshot's version of it
    (so a moving revision, such as the latest, cannot change under an open
    file)."""

    DEFAULT_BLOCK_SIZE = 8 * 2**20

    def __init__(self, fs, path, mode="rb", block_size="default", cache_options=None, details=None, **kwargs):
        # fsspec's reopen (after unpickling) passes size itself.
        kwargs.pop("size", None)
        if details is None:
            details = fs.info(path)
        # Ranges are read from the snapshot the file was found in (a moving
        # revision such as the latest cannot change under an open file),
        # through the dataset's own remote when content is fetched on demand.
        snap = details.get("snapshot")
        stripped = fs._strip_protocol(path)
        if snap and not stripped.startswith("blake3:"):
            spec, _, rest = stripped.partition("/")
            self.file_id = f"{spec.partition('@')[0]}@{snap}/{rest}"
        else:
            self.file_id = details.get("id") or None
        kwargs.setdefault("cache_type", AdaptiveReadahead.name)
        super().__init__(
            fs,
            path,
            mode,
            block_size=block_size,
            cache_options=cache_options,
            size=details["size"],
            **kwargs,
        )
        self.details = details

    def _fetch_range(self, start, end):
        target = self.file_id or self.path
        return self.fs.cat_file(target, start, end)
