from components.run_report.component import run_report

__all__ = ["run_report"]
