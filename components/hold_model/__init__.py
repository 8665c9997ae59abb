from components.hold_model.component import hold_model

__all__ = ["hold_model"]
