"""The ingress on eas-server's port: every predict call enters `Gateway.handle` (core.py).

Adapters per transport: EAS HTTP (http.py), Open Inference Protocol REST (oip_http.py),
gRPC (grpc_server.py). The core reads the route table (route_table.py) the controller
writes, forwards with its own HTTP/1.1 client (upstream.py), relays WebSockets
(websocket.py) and records metrics (metrics.py).
"""
