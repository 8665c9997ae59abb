from components.traces.component import traces

__all__ = ["traces"]
