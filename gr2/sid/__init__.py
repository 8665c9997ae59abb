"""Semantic-ID tokenizer: item text -> embeddings -> RQ-VAE codes -> unique SIDs (``gr2 sid ...``).

Modules: ``config`` (SIDConfig), ``embed`` (text encoder + content-hash cache), ``rqvae`` (the model),
``collisions`` (random last level, collision resolution), ``sidmap`` (SIDMap: item <-> codes <->
tokens), ``train`` (``train_sid(cfg) -> SIDArtifacts``), ``assign`` (new items, no retraining) and
``ablate`` (trick-by-trick table). Serving and training code only needs :class:`gr2.sid.sidmap.SIDMap`.
"""
