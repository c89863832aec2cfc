"""vllm-mock of the sample project: says what it is and where it runs, like the other
sample components (the real one answers an OpenAI-compatible API with canned tokens)."""

import platform
from pathlib import Path

built_for = (Path(__file__).parent / "arch").read_text().strip()
print(f"aibrix-sample vllm-mock {platform.machine()} (built for {built_for})")
print("models: mock-llama")
