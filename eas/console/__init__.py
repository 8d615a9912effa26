"""The web console at `/console` (docs/console.md): services, one service, live charts.

It sits beside eas/api and never imports it: the browser's JSON calls go to the
management API's own handlers through `/console/api/v2/...` (the console checks the
session cookie, then hands the request to the API routes the composition root passes
in, with the admin credentials), so every answer is the API's answer. The console adds
only what the API lacks:

- session.py  sign-in with the admin AccessKey pair: a signed, HttpOnly session cookie
- history.py  a short in-memory history of each service's metrics, sampled every 2 s
- app.py      the routes: the page and its assets, sign-in/out, metrics history,
              traffic rows, the online test (through the real gateway, in-process)
- static/     plain HTML, CSS and JavaScript (no build step, nothing from a CDN)
"""

from eas.console.app import Console

__all__ = ["Console"]
