"""Compatibility names: ``exporter`` was split into :mod:`routers.export.writer` and :mod:`routers.export.loader`.

Import from :mod:`routers.export` (``export_router``, ``load_exported``, ...) or from the two modules.
"""

from routers.export.loader import Decision, ExportedRouter, load_arrays, load_exported, verify_folder
from routers.export.writer import _why_not_exportable, export_router, exportable_router_names, state_encoders

__all__ = [
    "Decision",
    "ExportedRouter",
    "_why_not_exportable",
    "export_router",
    "exportable_router_names",
    "load_arrays",
    "load_exported",
    "state_encoders",
    "verify_folder",
]
