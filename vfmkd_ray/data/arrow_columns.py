"""A block's Arrow table as the decode stage's NumPy columns, its binary columns without a copy.

Ray Data's own ``numpy`` batches copy every binary value into a Python ``bytes`` object: for a
store row that is the whole feature map (2 MB for SAM at 1024 px in fp16), copied once more before
any check has read it. Here each binary value is a ``memoryview`` of the Arrow buffer Parquet
decoded into: checksums, finiteness and ``np.frombuffer`` read it in place, and the view keeps the
buffer alive for as long as a row refers to it (``benchmarks/data_plane``: "Arrow to NumPy").
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def numpy_columns(table: pa.Table) -> dict[str, np.ndarray]:
    """Every column of ``table`` as a NumPy array: binary ones as object arrays of ``memoryview``s
    (None for a null), the others as Arrow converts them (object arrays for strings and lists)."""
    columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            columns[name] = _binary_views(column)
        else:
            columns[name] = column.to_numpy(zero_copy_only=False)
    return columns


def _binary_views(column: pa.ChunkedArray) -> np.ndarray:
    views = np.empty(len(column), dtype=object)
    row = 0
    offset_type = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    for chunk in column.chunks:
        validity, offsets_buffer, data_buffer = chunk.buffers()
        offsets = np.frombuffer(offsets_buffer, offset_type)[chunk.offset : chunk.offset + len(chunk) + 1]
        data = memoryview(data_buffer) if data_buffer is not None else memoryview(b"")
        valid = chunk.is_valid().to_numpy(zero_copy_only=False) if validity is not None else None
        for index in range(len(chunk)):
            if valid is not None and not valid[index]:
                views[row] = None
            else:
                views[row] = data[offsets[index] : offsets[index + 1]]
            row += 1
    return views
