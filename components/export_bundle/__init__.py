from components.export_bundle.component import export_bundle

__all__ = ["export_bundle"]
