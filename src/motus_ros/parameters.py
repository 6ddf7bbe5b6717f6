"""Parameter descriptors (description and range, what `ros2 param describe` shows) and the parameters every node
of the server declares (a params file sets them once for all nodes under `/**:`)."""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor


def float_descriptor(description: str, low: float, high: float, read_only: bool = False) -> ParameterDescriptor:
    return ParameterDescriptor(
        description=description,
        read_only=read_only,
        floating_point_range=[FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)],
    )


def int_descriptor(description: str, low: int, high: int, read_only: bool = False) -> ParameterDescriptor:
    return ParameterDescriptor(
        description=description,
        read_only=read_only,
        integer_range=[IntegerRange(from_value=int(low), to_value=int(high), step=1)],
    )


def text_descriptor(description: str, read_only: bool = False) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=read_only)


# Parameters every node declares (a params file sets them once for all nodes under `/**:`).
COMMON_PARAMETERS = {
    "profile": (
        "aloha_sim",
        text_descriptor("robot profile: a name under config/robots/ or a path to a profile YAML", read_only=True),
    ),
    "autostart": (True, text_descriptor("configure and activate the node when the server starts", read_only=True)),
    "checkpoint": (
        "",
        text_descriptor(
            "checkpoint folder (config.json + model.safetensors); empty = use `preset` with random weights",
            read_only=True,
        ),
    ),
    "preset": (
        "motus-small",
        text_descriptor(
            "model preset used when `checkpoint` is empty (development only: random weights)", read_only=True
        ),
    ),
    "device": ("cpu", text_descriptor("torch device of the model, e.g. cpu or cuda:0", read_only=True)),
    "seed": (
        0,
        int_descriptor("seed of the random initialisation when running a preset", 0, 2**31 - 1, read_only=True),
    ),
    "max_batch": (
        4,
        int_descriptor("largest batch of same-mode requests the engine runs at once", 1, 64, read_only=True),
    ),
    "default_steps": (0, int_descriptor("denoising steps when a request says 0; 0 = the model's default", 0, 1000)),
    # One request with 65,535 steps held the model for minutes (and the policy in hold): requests above the cap
    # are refused INVALID_REQUEST before they are queued.
    "max_denoising_steps": (100, int_descriptor("largest number of denoising steps a request may ask for", 1, 100000)),
    "request_timeout_s": (
        120.0,
        float_descriptor("how long a service waits for the model before answering INTERNAL", 1.0, 3600.0),
    ),
    "diagnostics_rate_hz": (
        1.0,
        float_descriptor("rate of this node's /diagnostics status", 0.1, 50.0, read_only=True),
    ),
}
