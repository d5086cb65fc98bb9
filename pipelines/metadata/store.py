"""Opening an ML Metadata store: a SQLite file (the embedded default), MySQL, or an MLMD gRPC server.

Read-only callers (`leaves`, `lineage`, `report`, `runs`) never create anything: SQLite opens in
READONLY mode and a missing MySQL database is not created. A run opens read-write and creates the
store. Every failure to open is one `StoreError` line, and a URL is only ever shown through
`redact`, which hides the password of `mysql://user:password@host/db`.
"""
from __future__ import annotations

import os
import socket
import urllib.parse
from typing import Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from collabopt.components.core.errors import CollaboptError, ConfigError

_SQLITE_MODE = metadata_store_pb2.SqliteMetadataSourceConfig
_MYSQL_USAGE = "expected mysql://user:password@host:port/database"


class StoreError(CollaboptError):
    """An ML Metadata store cannot be opened: unreachable, not a store, or not there."""


def redact(uri: str) -> str:
    """`uri` with the password of its userinfo replaced by `***` (paths and other URLs unchanged)."""
    if "://" not in uri:
        return uri
    try:
        parsed = urllib.parse.urlsplit(uri)
        password = parsed.password
    except ValueError:  # e.g. a non-numeric port: hide everything between :// and @
        scheme, _, rest = uri.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}" if "@" in rest else uri
    if password is None:
        return uri
    userinfo, _, hostport = parsed.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urllib.parse.urlunsplit(parsed._replace(netloc=f"{user}:***@{hostport}"))


def secrets_of(uri: str) -> list[str]:
    """The strings of `uri` that must never be shown (its password, raw and decoded)."""
    if "://" not in uri or "@" not in uri:
        return []
    try:
        password = urllib.parse.urlsplit(uri).password
    except ValueError:
        userinfo = uri.partition("://")[2].rpartition("@")[0]
        password = userinfo.partition(":")[2]
    if not password:
        return []
    return sorted({password, urllib.parse.unquote(password)}, key=len, reverse=True)


def is_local_file(uri: str) -> bool:
    return "://" not in uri


def connection_config(uri: str, readonly: bool = False) -> metadata_store_pb2.ConnectionConfig:
    """`path/to/metadata.sqlite` or `mysql://user:password@host:port/database`.

    A Kubeflow cluster's store is MySQL-backed; reach it directly, or through its metadata gRPC
    service with `grpc://host:port` (see `open_store`)."""
    config = metadata_store_pb2.ConnectionConfig()
    if uri.startswith("mysql://"):
        try:
            parsed = urllib.parse.urlsplit(uri)
            host, port = parsed.hostname, parsed.port or 3306
        except ValueError as exc:
            raise ConfigError(f"metadata {redact(uri)!r}: {exc}; {_MYSQL_USAGE}") from None
        database = parsed.path.lstrip("/")
        if not host or not database:
            missing = "host" if not host else "database name"
            raise ConfigError(f"metadata {redact(uri)!r} has no {missing}: {_MYSQL_USAGE}")
        config.mysql.host = host
        config.mysql.port = port
        config.mysql.database = database
        config.mysql.user = urllib.parse.unquote(parsed.username or "root")
        config.mysql.password = urllib.parse.unquote(parsed.password or "")
        config.mysql.skip_db_creation = readonly
        return config
    if "://" in uri:
        raise ConfigError(f"metadata {redact(uri)!r}: use a SQLite file path, mysql://… or "
                          "grpc://host:port")
    config.sqlite.filename_uri = uri
    config.sqlite.connection_mode = _SQLITE_MODE.READONLY if readonly else \
        _SQLITE_MODE.READWRITE_OPENCREATE
    return config


def open_store(uri: str, readonly: bool = True) -> metadata_store.MetadataStore:
    """A MetadataStore for a SQLite path, mysql:// URL or grpc://host:port.

    `readonly=True` (readers) needs an existing store and writes nothing; `readonly=False` (a run)
    creates the SQLite file or the MySQL database when missing."""
    if uri.startswith("grpc://"):
        parsed = urllib.parse.urlsplit(uri)
        config = metadata_store_pb2.MetadataStoreClientConfig(
            host=parsed.hostname or "localhost", port=parsed.port or 8080)
        return metadata_store.MetadataStore(config)
    config = connection_config(uri, readonly=readonly)
    if config.HasField("sqlite"):
        return _open_sqlite(uri, config, readonly)
    return _open_mysql(uri, config, readonly)


def _open_sqlite(uri: str, config, readonly: bool) -> metadata_store.MetadataStore:
    if readonly and not os.path.isfile(uri):
        raise StoreError(f"No ML Metadata store at {uri!r}. Run a pipeline first (`collabopt demo` "
                         "or `collabopt run pipeline.yaml`), or pass --metadata.")
    if not readonly and os.path.dirname(uri):
        os.makedirs(os.path.dirname(uri), exist_ok=True)
    try:
        return metadata_store.MetadataStore(config)
    except RuntimeError as exc:
        reason = str(exc).removeprefix("Error when executing query: ").split(" query:", 1)[0]
        if "readonly database" in reason or "no such table" in reason:
            raise StoreError(f"{uri!r} is not an ML Metadata store (it holds no MLMD tables). "
                             "Pass the metadata file a pipeline run wrote.") from None
        if "not a database" in reason:
            raise StoreError(f"{uri!r} is not a SQLite file, so not an ML Metadata store. Pass the "
                             "metadata file a pipeline run wrote.") from None
        raise StoreError(f"Cannot open the ML Metadata store {uri!r}: {reason}") from None


def _open_mysql(uri: str, config, readonly: bool) -> metadata_store.MetadataStore:
    mysql = config.mysql
    where = f"MySQL at {mysql.host}:{mysql.port}"
    unreachable = _unreachable(mysql.host, mysql.port)
    if unreachable:
        raise StoreError(f"Cannot reach the ML Metadata store {redact(uri)}: {where} is "
                         f"unreachable ({unreachable}). Start the server or fix host and port.")
    try:
        return metadata_store.MetadataStore(config)
    except RuntimeError as exc:
        detail = str(exc).strip()
        detail = "" if detail.endswith("error:") else f" ({_scrub(detail, uri)})"
        missing = (f"the database {mysql.database!r} does not exist (read-only commands never "
                   "create it), or " if readonly else "")
        raise StoreError(
            f"{where} refused the ML Metadata store {redact(uri)}{detail}: {missing}the user "
            f"{mysql.user!r} or its password is wrong.") from None


def _unreachable(host: str, port: int) -> Optional[str]:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _scrub(text: str, uri: str) -> str:
    for secret in secrets_of(uri):
        text = text.replace(secret, "***")
    return text
