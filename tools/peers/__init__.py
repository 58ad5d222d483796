"""Peers: models from elsewhere that the study sets beside its own, through small adapters.

* :mod:`.taps`: TAPS (``lavlab-taps`` 1.1.2, MIT), a MONAI SegResNetDS trained on real prostate MRI, shipped as
  ONNX inside its wheel; an optional dependency (``pip install --no-deps lavlab-taps==1.1.2 onnxruntime``).
"""
