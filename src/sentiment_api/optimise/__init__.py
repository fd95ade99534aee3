"""Optimisation: ONNX export and fusions (``export``), int8 (``quantise``), the accuracy gate
(``gate``), and the benchmark of every variant (``bench``)."""
