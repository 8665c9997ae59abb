"""Staged training: mid-training (``midtrain``), rejection-sampled traces (``traces``), reasoning SFT
(``reasoning``) and the stage-by-stage table (``stages``), each a config section plus one entry function."""
