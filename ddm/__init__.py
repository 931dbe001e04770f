"""Distilled Datamodel (DDM): training-data attribution by reverse gradient matching."""

__version__ = "0.1.0"
