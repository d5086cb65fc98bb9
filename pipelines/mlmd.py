"""ML Metadata connections: a SQLite file (the embedded default), MySQL, or an MLMD gRPC server."""
from __future__ import annotations

import os
import urllib.parse

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata

from collabopt.components.core.errors import ConfigError


def connection_config(uri: str) -> metadata_store_pb2.ConnectionConfig:
    """`path/to/metadata.sqlite` or `mysql://user:password@host:port/database`.

    A Kubeflow cluster's store is MySQL-backed; reach it directly, or through its metadata gRPC
    service with `grpc://host:port` (see client_config)."""
    if uri.startswith("mysql://"):
        parsed = urllib.parse.urlparse(uri)
        database = parsed.path.lstrip("/")
        if not parsed.hostname or not database:
            raise ConfigError(f"metadata {uri!r}: expected mysql://user:password@host:port/database")
        return metadata.mysql_metadata_connection_config(
            host=parsed.hostname, port=parsed.port or 3306, database=database,
            username=urllib.parse.unquote(parsed.username or "root"),
            password=urllib.parse.unquote(parsed.password or ""))
    if "://" in uri:
        raise ConfigError(f"metadata {uri!r}: use a SQLite file path, mysql://… or grpc://host:port")
    return metadata.sqlite_metadata_connection_config(uri)


def open_store(uri: str, must_exist: bool = True) -> metadata_store.MetadataStore:
    """A MetadataStore for a SQLite path, mysql:// URL or grpc://host:port."""
    if uri.startswith("grpc://"):
        parsed = urllib.parse.urlparse(uri)
        config = metadata_store_pb2.MetadataStoreClientConfig(
            host=parsed.hostname or "localhost", port=parsed.port or 8080)
        return metadata_store.MetadataStore(config)
    if must_exist and "://" not in uri and not os.path.exists(uri):
        raise ConfigError(f"No ML Metadata store at {uri!r}. Run a pipeline first "
                          "(`collabopt demo` or `collabopt run pipeline.yaml`), or pass --metadata.")
    return metadata_store.MetadataStore(connection_config(uri))
