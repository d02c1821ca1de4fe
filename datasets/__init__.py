"""Fileset specifications, toy generators and converters."""

from hepsieve.datasets.filesets import ResolvedFileset, load_fileset_spec, resolve_fileset

__all__ = ["ResolvedFileset", "load_fileset_spec", "resolve_fileset"]
