"""The core, in named parts: domain (pure values and decisions), registry, store, tools
(I/O edges), usecases and runtime on top. It imports neither `handlers` nor `bot`."""
