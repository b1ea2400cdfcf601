"""The model: building the offline DistilBERT, loading a model (torch or ONNX Runtime), and classifying texts.

- ``loader``: ``load`` and ``resolve``, one path for a hub id, a directory or ``offline:tiny`` / ``offline:base``.
- ``builder``: the offline DistilBERT (the real architecture, random weights, a WordPiece tokenizer trained
  on ``data/corpus.txt.gz``): ``inferq-build-model``.
- ``loaded``: what a loaded model offers (encode, forward, labels) whatever its runtime.
- ``torch_model``, ``onnx_model``, ``onnx_export``: the two runtimes, and the ONNX export made once.
- ``inference``: ``classify`` and ``classify_jobs``, plain functions, testable without a broker.

The workers (tasks/), the local stack (stack/) and the benchmark (bench/) use it; importing this package
imports no torch: each module imports its runtime where it loads a model.
"""
