"""The HTTP side of merchant-authd: application, middleware, routes and handlers."""
