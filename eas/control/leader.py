"""Leader election: one lease row in the store says which eas-server's controller acts.

Several eas-servers may share one PostgreSQL store (and one Ray cluster). All of them
serve the management API and the gateway; only the lease holder's controller deploys,
deletes and writes observed status, so no change is applied twice. The others follow:
they build their routes from what Ray runs without touching it (eas/control/controller.py).

Why a lease row and not PostgreSQL advisory locks: the same code runs on SQLite; a
lease survives a connection blip (an advisory lock dies with its session, and poolers
in transaction mode break session locks); its term is a fencing number that grows at
every change of holder; and expiry is judged on the database's clock, so servers whose
clocks disagree still agree on who leads.

Safety margin: a holder stops acting `margin` before the database would let another
server take over, measured on its own monotonic clock from before the renewing write.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from pathlib import Path

from eas.control.store import Store

log = logging.getLogger("eas.leader")

LEASE_NAME = "controller"
DEFAULT_TTL_S = 10.0


class LeaderLease:
    def __init__(self, store: Store, holder: str, ttl_s: float = DEFAULT_TTL_S,
                 name: str = LEASE_NAME, clock=time.monotonic) -> None:  # noqa: ANN001
        if ttl_s <= 0:
            raise ValueError("lease ttl must be positive")
        self.store = store
        self.holder = holder
        self.ttl_s = ttl_s
        self.name = name
        self.term = 0
        self._clock = clock
        self._valid_until = float("-inf")
        self._was_leading = False

    @property
    def margin_s(self) -> float:
        return min(2.0, self.ttl_s * 0.2)

    @property
    def leading(self) -> bool:
        """True while the last successful renewal still covers now (no database call)."""
        return self._clock() < self._valid_until

    def check(self) -> bool:
        """Renew (or try to take) the lease; True when this server leads now.

        Called on every controller pass, so a leader renews about every second while
        the lease lasts `ttl_s`. If the database cannot be reached the holder keeps
        leading only until its last renewal runs out.
        """
        started = self._clock()
        try:
            granted, term = self.store.acquire_lease(self.name, self.holder, self.ttl_s)
        except Exception as exc:  # the database is away: lead no longer than the lease we hold
            log.warning("lease %s: cannot renew (%s)", self.name, exc)
            granted, term = False, self.term
        if granted:
            self._valid_until = started + self.ttl_s - self.margin_s
            self.term = term
        leading = self.leading
        if leading != self._was_leading:
            if leading:
                log.info("leading: %s holds lease '%s' (term %d)", self.holder, self.name, self.term)
            else:
                log.warning("following: %s no longer holds lease '%s'", self.holder, self.name)
            self._was_leading = leading
        return leading

    def step_down(self) -> None:
        """Stop leading at once (the store refused a write fenced by our term: another
        server took the lease); the next `check` may take it again if it is free."""
        self._valid_until = float("-inf")
        if self._was_leading:
            log.warning("following: %s was deposed from lease '%s' (term %d)", self.holder, self.name, self.term)
        self._was_leading = False

    def release(self) -> None:
        """Give the lease up (clean shutdown) so a follower takes over without waiting."""
        if not self._was_leading:
            return
        self._valid_until = float("-inf")
        self._was_leading = False
        try:
            self.store.release_lease(self.name, self.holder)
        except Exception as exc:
            log.warning("lease %s: could not release (%s); it expires in %.0f s", self.name, exc, self.ttl_s)


def server_identity(data_dir: Path) -> str:
    """A holder name kept in the data dir, so a server restarted (even after kill -9)
    on the same data dir takes its own unexpired lease back at once."""
    path = data_dir / "server-id"
    try:
        ident = path.read_text().strip()
        if ident:
            os.chmod(path, 0o600)  # one written 0644 by an older server
            return ident
    except OSError:
        pass
    ident = f"{socket.gethostname()}-{secrets.token_hex(4)}"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private, like the rest of the data dir
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(ident + "\n")
    os.replace(tmp, path)
    return ident
