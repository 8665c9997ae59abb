"""The GR2 Kubeflow pipeline: the DAG, compile, local run and submit."""
