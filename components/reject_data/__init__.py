from components.reject_data.component import reject_data

__all__ = ["reject_data"]
