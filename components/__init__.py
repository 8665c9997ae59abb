"""Kubeflow Pipelines components: thin typed adapters over the gr2 stage functions."""
