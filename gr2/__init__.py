"""gr2: a GR2-style generative reasoning re-ranker, from raw interactions to a served model.

The core package never imports Kubernetes libraries (kfp, kserve): those live in
``components/``, ``pipelines/`` and ``serving/``.
"""

__version__ = "0.1.0"
