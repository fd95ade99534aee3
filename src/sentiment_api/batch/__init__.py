"""Batch prediction of files of any size, in bounded memory, resumable, on one machine or on Ray.

The path of a row, one module per step:

- ``sources``: a file, a directory or a glob, read in chunks (a pyarrow dataset for Parquet,
  pyarrow's streaming readers for CSV and JSON Lines, ``data.spreadsheets`` for XLSX);
- ``scoring``: bad rows marked, the rest normalised and scored by one call per chunk, the label and
  score columns added;
- ``sinks``: numbered part files, each written to a temporary name and renamed; merged into one
  file when one was asked for;
- ``runner``: the loop on one machine (resume, progress, report); ``ray_data``: the same scoring on
  Ray Data; ``predict``: which of the two, and the streams a package is scored on.
"""
