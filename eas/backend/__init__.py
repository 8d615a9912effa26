"""Ray, and only here: the Serve backend the controller drives (ray_serve.py) and the
replica class that hosts one instance inside Ray (replica.py)."""
