"""Entropy coding: fixed integer tables (tables.py) and the range coder over them (coder.py)."""

from .coder import CodingClock, SubstreamDecoder, SubstreamEncoder
from .factorized import factorized_counts, tables_from_counts
from .tables import SymbolTable, gaussian_tables, quantize_pmf, scale_to_index

__all__ = [
    "CodingClock", "SubstreamDecoder", "SubstreamEncoder", "SymbolTable", "factorized_counts", "tables_from_counts",
    "gaussian_tables", "quantize_pmf", "scale_to_index",
]
