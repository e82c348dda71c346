"""The HTTP service: the application (:mod:`.app`), the route table and its OpenAPI document
(:mod:`.routes`), the handlers (:mod:`.handlers`), request and response models (:mod:`.schemas`), the
middleware (:mod:`.middleware`) and the Prometheus metrics (:mod:`.metrics`)."""
