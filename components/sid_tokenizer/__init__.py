from components.sid_tokenizer.component import sid_tokenizer

__all__ = ["sid_tokenizer"]
