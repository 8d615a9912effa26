"""The control plane: desired state in the store, reconciled onto the backend.

store.py (the truth) and leader.py (one acting server); controller.py runs the
reconcile loop; autoscale.py decides instance counts; traffic.py holds release and
traffic rules; backend.py is what the controller needs from Ray (eas/backend/).
"""
