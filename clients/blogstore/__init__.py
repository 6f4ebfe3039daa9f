"""blogstore client: generated stubs under ``blogstore.v1``, helpers in ``blogstore.client``."""
