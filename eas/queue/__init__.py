"""The queue service of asynchronous services (docs/async.md): the SDKs' queue protocol at
the predict paths (http.py), the dispatcher feeding instances (dispatcher.py), and what
they share (service.py). The queues themselves live in the store (eas/control/queues.py).
"""
