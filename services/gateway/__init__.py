"""The OpenAI-compatible HTTP gateway: /v1/models, /v1/completions, /v1/chat/completions over loranet jobs."""
