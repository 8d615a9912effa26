"""One instance of a service, inside a Ray Serve replica (or a test): every request to a
model enters `InstanceApp.handle` (core.py: auth, queue limit, keepalive), reaches the
runtime (runtime.py: batching in batching.py, inline or worker pool) and the processor.
http.py is its HTTP face; oip.py runs Open Inference Protocol calls.
"""
