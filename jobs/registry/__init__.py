"""OCI registry I/O: HTTP, the token flow, docker credentials, endpoints, the client and
the inspection engine that reads a published reference back and judges it."""
