"""The Redis store: key names, connections and scripts, the job queue, and the release
record with its Lua. Nothing outside this package names a key or runs Lua."""
