"""What travels on the wire, free of any server: EAS headers, limits and error bodies
(wire.py), token and signature checks (auth.py), the Open Inference Protocol codec
(oip.py, oip_rest.py), gRPC messages (grpc_messages.py) and the HTTP helpers the
gateway and instances share (http.py). Gateway, instance and client all build on it.
"""
