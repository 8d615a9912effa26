"""Stand-in for EAS's `allspark` package, so unmodified EAS Python processors import.

EAS user code subclasses `allspark.BaseProcessor` and ends with `runner.run()` under
`if __name__ == "__main__"`. eas-server loads the class itself (that block never
runs there), so only the constructor, the attributes and a helpful `run()` matter.
Installed as `sys.modules["allspark"]` by the Python processor, only when no real
`allspark` is importable.
"""

from __future__ import annotations

from typing import Any


class BaseProcessor:
    """Base class of EAS Python processors: override `initialize` and `process`."""

    def __init__(
        self,
        worker_threads: int = 5,
        io_threads: int = 4,
        worker_processes: int = 1,
        endpoint: str | None = None,
    ) -> None:
        self.worker_threads = worker_threads
        self.io_threads = io_threads
        self.worker_processes = worker_processes
        self.endpoint = endpoint
        self.model_path: str | None = None
        self.model_entry: str | None = None
        self.model_config: Any = None

    def get_model_path(self) -> str | None:
        """Local directory (or file) of the service's model, set before initialize()."""
        return self.model_path

    def initialize(self) -> None:
        """Load the model; the default does nothing."""

    def process(self, data: bytes) -> tuple[bytes, int]:
        raise NotImplementedError(f"{type(self).__name__} must implement process(self, data)")

    def run(self) -> None:
        raise RuntimeError(
            "eas-server runs processors itself: deploy this file with processor_type: python "
            "(eascmd create / eascmd test) instead of calling run()")


def __getattr__(name: str) -> Any:
    raise AttributeError(
        f"allspark.{name} is not provided by eas-serving's allspark shim (only BaseProcessor)")
