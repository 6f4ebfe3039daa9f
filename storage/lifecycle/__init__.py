"""Data lifecycle: backups, restores, retention and imports; no protobuf, no grpc."""
