"""Kubeflow Pipelines components: thin typed adapters over :mod:`gr2.pipeline.steps`, one folder each.

Stages the report's method has but gr2 does not yet (on-policy distillation, the compressor) get a component
when their ``gr2`` stage lands.
"""
