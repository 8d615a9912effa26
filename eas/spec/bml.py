"""Two service JSON blocks from Baidu BML: `bml` (BML mode) and `backflow` (data backflow).

`bml`: the service answers BML's API (eas/protocols/bml.py): `{"log_id", "result"}`
answers, `{"log_id", "error_code", "error_msg"}` errors with BML's codes, and the
`?access_token=` query next to the Authorization header. `framework` names the
per-framework answer shape of BML's `instances` API (labels for sklearn/XGBoost,
predictions for TensorFlow/PyTorch/Paddle).

`backflow`: a share of requests and their answers is captured (bodies cut at
`max_body_bytes`, no headers, so never a token) for labelling and retraining, as BML's
数据回流 and EAS's call records do.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from eas.spec.base import Strict

FRAMEWORKS = ("sklearn", "xgboost", "tensorflow", "pytorch", "paddle", "paddleclas", "paddledetection")


class BmlSpec(Strict):
    enabled: bool = Field(True, description="false keeps the block but answers EAS's API")
    framework: Literal["sklearn", "xgboost", "tensorflow", "pytorch", "paddle", "paddleclas",
                       "paddledetection"] | None = None


class BackflowSpec(Strict):
    ratio: float = Field(..., ge=0, le=1, description="share of requests captured, 0..1")
    max_body_bytes: int = Field(64 * 1024, ge=0, le=4 * 1024 * 1024,
                                description="bytes of each request and answer body kept")
    keep: int = Field(100_000, ge=1, le=10_000_000, description="records kept per service, the oldest dropped")
