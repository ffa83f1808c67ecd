"""The running agent: the service, namespace registry, control socket, drain and worker
processes."""
