"""edgebench: which compressed variant of my model should I deploy on this device?

Compress a PyTorch model several ways, export each variant to ONNX and TFLite, run every
variant on the real runtime of each target device and compare size, latency, memory, an
energy estimate and accuracy, with the Pareto front marked.
"""

__version__ = "0.1.0"
SCHEMA_VERSION = 1
