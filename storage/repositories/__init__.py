"""Queries per aggregate. Repositories flush; only the unit of work commits."""
