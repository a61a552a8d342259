"""TF Serving's gRPC API over a `ModelManager`: PredictionService (Predict,
GetModelMetadata) and ModelService (GetModelStatus)."""

from __future__ import annotations

import logging

import grpc
import tensorflow as tf
from google.protobuf import wrappers_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc
from tensorflow_serving.apis import get_model_status_pb2 as status_api

from recgpt_tf.serving.servable import ModelManager, ServingError

log = logging.getLogger("recgpt.serve")


def _requested_version(manager: ModelManager, spec: model_pb2.ModelSpec) -> int | None:
    """The version a ModelSpec asks for: its number, its label resolved through models.config, or None (the newest)."""
    if spec.HasField("version"):
        return spec.version.value
    if spec.version_label:
        return manager.resolve_label(spec.name, spec.version_label)
    return None


def _spec(servable, signature_name: str = "") -> model_pb2.ModelSpec:
    return model_pb2.ModelSpec(name=servable.name, version=wrappers_pb2.Int64Value(value=servable.version), signature_name=signature_name)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> predict_pb2.PredictResponse:
        try:
            servable = self.manager.get(request.model_spec.name, _requested_version(self.manager, request.model_spec))
            signature, _ = servable.signature(request.model_spec.signature_name)
            outputs = servable.run(signature, dict(request.inputs), self.manager.limits)
            response = predict_pb2.PredictResponse(model_spec=_spec(servable, signature))
            wanted = set(request.output_filter) or set(outputs)
            for key in sorted(wanted):
                if key not in outputs:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"output_filter names '{key}', which is not an output")
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
            return response
        except ServingError as error:
            context.abort(error.code, error.message)
        except Exception as error:  # never let a request take the endpoint down
            log.exception("Predict failed")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")

    def GetModelMetadata(self, request, context):
        try:
            if list(request.metadata_field) != ["signature_def"]:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "metadata_field must be exactly ['signature_def']")
            servable = self.manager.get(request.model_spec.name, _requested_version(self.manager, request.model_spec))
            response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=_spec(servable))
            response.metadata["signature_def"].Pack(servable.signature_def_map())
            return response
        except ServingError as error:
            context.abort(error.code, error.message)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def GetModelStatus(self, request, context):
        try:
            rows = self.manager.status(request.model_spec.name, _requested_version(self.manager, request.model_spec))
            response = status_api.GetModelStatusResponse()
            for version, state, message in rows:
                entry = response.model_version_status.add(version=version, state=getattr(status_api.ModelVersionStatus, state))
                entry.status.error_code = 0 if not message else 13
                entry.status.error_message = message
            return response
        except ServingError as error:
            context.abort(error.code, error.message)


def add_services(server: grpc.Server, manager: ModelManager) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(manager), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
