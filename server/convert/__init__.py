"""Conversions between protobuf messages and storage values, one module per service."""
