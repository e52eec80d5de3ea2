"""A minimal, fast, OpenAI-compatible LLM gateway."""

__version__ = "0.90.2"
