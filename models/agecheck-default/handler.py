"""Inference Endpoints handler: needs the agecheck package (age_model) installed in the endpoint."""

from age_model.endpoint import EndpointHandler  # noqa: F401
