"""The management REST API (`/api/v2/...`, docs/api.md): thin HTTP handlers over the
control plane. base.py holds what every endpoint shares (auth, errors, running the
handler off the predict event loop); services.py and traffic.py the endpoints.
"""
