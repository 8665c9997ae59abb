from components.internalize.component import internalize

__all__ = ["internalize"]
