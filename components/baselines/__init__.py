from components.baselines.component import baselines

__all__ = ["baselines"]
