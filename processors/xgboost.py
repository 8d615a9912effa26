"""XGBoost boosters in their native formats (JSON or UBJSON, also legacy binary).

Serving the native file rather than a pickle keeps the model independent of the
Python and xgboost versions it was trained with (XGBoost promises to load its JSON
format across versions), and needs no scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._files import find_model_file, model_config_dict
from ._tabular import TabularProcessor
from .base import ModelLoadError, ProcessorError

MODEL_SUFFIXES = (".json", ".ubj", ".model", ".bst", ".bin")


class XGBoostProcessor(TabularProcessor):
    """`xgboost.Booster`; `model_config`: `output_margin` (raw scores), `nthread`."""

    allow_text_features = False

    def load(self) -> None:
        import xgboost as xgb

        path = find_model_file(self.ctx, MODEL_SUFFIXES, "XGBoost")
        config = model_config_dict(self.ctx.model_config)
        params: dict[str, Any] = {}
        if "nthread" in config:
            params["nthread"] = config["nthread"]
        try:
            booster = xgb.Booster(params=params, model_file=str(path))
        except xgb.core.XGBoostError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{path.name} is not a valid XGBoost model: {first}") from None
        self.output_margin = bool(config.get("output_margin", False))
        self.model = booster

    def n_features(self) -> int | None:
        count = self.model.num_features()
        return count if count > 0 else None

    def _infer(self, features: np.ndarray) -> dict[str, np.ndarray]:
        try:
            # inplace_predict is thread safe and skips building a DMatrix per request.
            out = self.model.inplace_predict(
                features, predict_type="margin" if self.output_margin else "value",
                validate_features=False)
        except Exception as exc:
            raise ProcessorError(f"xgboost rejected the input: {exc}") from None
        return {"predictions": np.asarray(out)}
