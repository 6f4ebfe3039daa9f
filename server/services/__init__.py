"""One servicer per proto service: validate, run one unit of work, map rows to protobuf."""
