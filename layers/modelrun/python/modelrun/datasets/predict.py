"""POST /predictions naming a dataset image: find its key through the dataset, predict it, record it in the image's
history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from modelrun.aws.s3 import ImageStore
from modelrun.datasets.history import PredictionHistory
from modelrun.datasets.store import DatasetStore
from modelrun.http.requests import ImageRequest
from modelrun.predict import Predictor
from modelrun.tenants import Tenant

logger = Logger(child=True)


@dataclass
class DatasetImagePredictor:
    """Single predictions of dataset images, for whichever tenant asks (each call is scoped to it).

    Attributes:
        datasets: the unscoped DatasetsTable store.
        history: where each prediction is recorded.
        images: the unscoped image store of the images bucket.
        bucket: the images bucket.
        predictor: the single-image predictor.
    """

    datasets: DatasetStore
    history: PredictionHistory
    images: ImageStore
    bucket: str
    predictor: Predictor

    def predict(self, tenant: Tenant, request: ImageRequest) -> dict[str, Any]:
        """Predict the image ``request.dataset_image`` names, as POST /predictions answers, with ``dataset_id``,
        ``image_id`` and ``key`` after the prediction id.

        Raises:
            DatasetNotFound: no such dataset of the tenant.
            ImageNotFound: the dataset has no such image, or its object is gone from the bucket.
            And whatever :meth:`Predictor.predict` raises for the image.
        """
        named = request.dataset_image
        if named is None:
            raise ValueError("the request names no dataset image")
        scoped = self.datasets.for_tenant(tenant)
        scoped.get(named.dataset_id)
        image = scoped.image(named.dataset_id, named.image_id)
        data = self.images.for_tenant(tenant).read(self.bucket, image["key"], max_bytes=self.predictor.limits.max_bytes)
        result = self.predictor.predict(
            data, model=request.model, version=request.version, masks=request.masks, preview=request.preview
        )
        try:
            self.history.record_single(tenant, dataset_id=named.dataset_id, image_id=named.image_id, result=result)
        except Exception:
            # The prediction is made and answered; its log line is the record of it then.
            logger.exception(
                "prediction history not written",
                dataset_id=named.dataset_id,
                image_id=named.image_id,
                prediction_id=result["prediction_id"],
            )
        ids = {"dataset_id": named.dataset_id, "image_id": named.image_id, "key": image["key"]}
        return {"prediction_id": result["prediction_id"], **ids, **result}
