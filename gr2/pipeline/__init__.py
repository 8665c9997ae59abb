"""What the Kubeflow pipeline needs from the core: its settings, the component steps, the TrainJob handoff.

Nothing here imports kfp: the components in ``components/`` are thin kfp adapters over
:mod:`gr2.pipeline.steps`.
"""
