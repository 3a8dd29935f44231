"""What operators see: health checks, request ids and the access log, metrics, traces."""
