"""The service JSON: typed models (service.py, elastic.py) and parsing (document.py).

The rest of the platform imports from here: `from eas import spec` then
`spec.parse(...)`, `spec.ServiceSpec`, `spec.SpecError`.
"""

from eas.spec.document import SpecError, load_text, merge, parse
from eas.spec.elastic import AutoscalerSpec, CronJob, CronScalerSpec, SleepSpec
from eas.spec.service import NAME_RE, Metadata, RpcConfig, ServiceSpec

__all__ = [
    "NAME_RE", "AutoscalerSpec", "CronJob", "CronScalerSpec", "Metadata", "RpcConfig", "ServiceSpec",
    "SleepSpec", "SpecError", "load_text", "merge", "parse",
]
