"""LLM variants from GGUF: reference copies, Hugging Face export, llama.cpp quantization, logits and quality."""
