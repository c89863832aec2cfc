"""The use cases: request, retry, cancel and merge a release (pipeline), promote it, copy
it to mirrors (sync) and run a sync job. They combine the store, the registry and the tools."""
