"""``FastTextModelHandler``: the trope model behind Beam's ``RunInference``.

``RunInference`` batches the examples, loads the model once per worker process in
``setup`` through ``Shared`` and reports load time, batch latency and sizes under
``get_metrics_namespace``.  An example is a document's model input, or None for a
document the language id or the AI gate routed around the model: it rides along
(so no Flatten or join is needed to put the documents back together) and costs no
``predict``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from transforms.classify.model import load_fasttext
from transforms.classify.score import predict_softmax
from transforms.logs import stage_logger

NAMESPACE = "tropemix.classify"
_LOG = stage_logger("classify")


class FastTextModelHandler(ModelHandler[str | None, PredictionResult, Any]):
    """Predicts the trope model's softmax (label -> probability) for each model input.

    Args:
      model_path: local path or ``FileSystems`` URL of the ``.ftz`` model.
      allow_unverified: use a remote model whose card gives no checksum.
      max_batch_size: most examples per ``predict`` call.
    """

    def __init__(self, model_path: str, allow_unverified: bool = False, max_batch_size: int = 64) -> None:
        super().__init__()
        self._model_path = model_path
        self._allow_unverified = allow_unverified
        self._max_batch_size = max_batch_size

    def load_model(self) -> Any:
        model = load_fasttext(self._model_path, self._allow_unverified)
        _LOG.info("model loaded", model=self._model_path, labels=len(model.get_labels()))
        return model

    def run_inference(
        self, batch: Sequence[str | None], model: Any, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        # One predict call for the examples that have an input; None stays None.
        softmax = iter(predict_softmax(model, [line for line in batch if line is not None]))
        return [PredictionResult(line, None if line is None else next(softmax)) for line in batch]

    def get_num_bytes(self, batch: Sequence[str | None]) -> int:
        return sum(len(line.encode("utf-8")) for line in batch if line is not None)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return {"min_batch_size": min(8, self._max_batch_size), "max_batch_size": self._max_batch_size}
