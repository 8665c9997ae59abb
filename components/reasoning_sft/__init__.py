from components.reasoning_sft.component import reasoning_sft

__all__ = ["reasoning_sft"]
