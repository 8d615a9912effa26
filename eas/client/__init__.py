"""Python clients for eas-server: the management API and the predict gateway.

`from eas.client import ManagementClient, PredictClient` is the one Python API of this
project (docs/client.md); eascmd is built on it. It needs nothing of the server.
"""

from eas.client.management import EasApiError, ManagementClient, ServiceFailedError
from eas.client.predict import (
    DISCOVERY_INTERVAL_S,
    DISCOVERY_PATH,
    ENDPOINT_DEFAULT,
    ENDPOINT_DIRECT,
    PredictClient,
    PredictError,
    WeightedRoundRobin,
)

__all__ = [
    "DISCOVERY_INTERVAL_S", "DISCOVERY_PATH", "ENDPOINT_DEFAULT", "ENDPOINT_DIRECT", "EasApiError",
    "ManagementClient", "PredictClient", "PredictError", "ServiceFailedError", "WeightedRoundRobin",
]
