"""The service JSON: typed models (service.py, elastic.py) and parsing (document.py).

The rest of the platform imports from here: `from eas import spec` then
`spec.parse(...)`, `spec.ServiceSpec`, `spec.SpecError`.
"""

from eas.spec.document import SpecError, load_text, merge, parse, service_name, with_name
from eas.spec.elastic import AutoscalerSpec, CronJob, CronScalerSpec, SleepSpec
from eas.spec.kept import kept_message
from eas.spec.queue import QueueSpec, is_async
from eas.spec.service import NAME_RE, Metadata, RpcConfig, ServiceSpec
from eas.spec.storage import StorageSpec

__all__ = [
    "NAME_RE", "QueueSpec", "is_async", "AutoscalerSpec", "CronJob", "CronScalerSpec", "Metadata", "RpcConfig", "ServiceSpec",
    "SleepSpec", "SpecError", "StorageSpec", "kept_message", "load_text", "merge", "parse", "service_name",
    "with_name",
]
