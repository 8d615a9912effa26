"""LightGBM boosters from their text model file (`Booster.save_model`).

The text format is LightGBM's own portable artefact; no pickle or scikit-learn needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._files import find_model_file, model_config_dict
from ._tabular import TabularProcessor
from .base import ModelLoadError, ProcessorError

MODEL_SUFFIXES = (".txt", ".lgb", ".model")


class LightGBMProcessor(TabularProcessor):
    """`lightgbm.Booster(model_file=...)`; `model_config`: `raw_score`, `num_threads`."""

    allow_text_features = False

    def load(self) -> None:
        import lightgbm as lgb

        path = find_model_file(self.ctx, MODEL_SUFFIXES, "LightGBM")
        config = model_config_dict(self.ctx.model_config)
        try:
            booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise ModelLoadError(f"{path.name} is not a valid LightGBM model: {exc}") from None
        self.options: dict[str, Any] = {"raw_score": bool(config.get("raw_score", False))}
        if "num_threads" in config:
            self.options["num_threads"] = int(config["num_threads"])
        self.model = booster

    def n_features(self) -> int | None:
        return self.model.num_feature()

    def _infer(self, features: np.ndarray) -> dict[str, np.ndarray]:
        try:
            out = self.model.predict(features, **self.options)
        except Exception as exc:
            raise ProcessorError(f"lightgbm rejected the input: {exc}") from None
        return {"predictions": np.asarray(out)}
