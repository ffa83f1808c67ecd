"""Nova's metadata API: the pooled keep-alive client, its connections, endpoints with
circuit breakers and TLS."""
