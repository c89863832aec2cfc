"""A small valid config file and its variations, shared by the config and permission tests."""

from __future__ import annotations

TOP = 'repository = "registry.example.com/aibrix"'
SOURCE = '[source]\ngit = "https://github.com/vllm-project/aibrix"'
COMPONENTS = """
[[components]]
name = "runtime"
dockerfile = "build/container/Dockerfile.runtime"

[[components]]
name = "gateway-plugins"
dockerfile = "build/container/Dockerfile.gateway"
"""


def doc(
    *, top: str = TOP, source: str = SOURCE, extra: str = "", components: str = COMPONENTS
) -> str:
    return f"{top}\n{source}\n{extra}\n{components}\n"
