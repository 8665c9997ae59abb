from components.build_samples.component import build_samples

__all__ = ["build_samples"]
