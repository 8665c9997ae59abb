"""The causal LM: corpus tokenizer with SID tokens and chat template, model factory, likelihood scoring."""
