"""Latent actions: optical flow -> flow image -> DC-AE -> 14-d latent action (stage-2 pseudo-actions)."""

from motus_model.latent_actions.flow import (
    FlowEstimator,
    FlowImage,
    OpenCVFlowEstimator,
    PTLFlowEstimator,
    RAFTFlowEstimator,
    flow_to_image,
    make_flow_estimator,
)
from motus_model.latent_actions.model import LatentActionVAE, LatentActionVAEConfig
from motus_model.latent_actions.train import FlowPairPool, label_dataset, train_latent_action_vae

__all__ = [
    "FlowEstimator",
    "FlowImage",
    "FlowPairPool",
    "LatentActionVAE",
    "LatentActionVAEConfig",
    "OpenCVFlowEstimator",
    "PTLFlowEstimator",
    "RAFTFlowEstimator",
    "flow_to_image",
    "label_dataset",
    "make_flow_estimator",
    "train_latent_action_vae",
]
