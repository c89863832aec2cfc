"""Work off the request path: queue, state, worker, build, merge, registry, sync."""
