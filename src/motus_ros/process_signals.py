"""SIGINT/SIGTERM for the two executables (motus_server, motus_sim): a signal only ends the spin loop.

rclpy's own handler would shut the context down at once, in the middle of whatever runs (the policy node could not
publish its hold command; the simulator's render thread would publish through a dead context). Once shutdown has
begun, further signals are ignored: `ros2 launch` forwards SIGINT on top of the one a terminal sends to the process
group, and a Python handler would not even help, because the interpreter restores the default action (die by the
signal, exit -2) for the handlers it set when it finalises, while a second signal may still be on its way.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_on_signals() -> threading.Event:
    """Install handlers that only set the returned event; call after rclpy.init(signal_handler_options=NO)."""
    stop = threading.Event()
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: stop.set())
    return stop


def ignore_signals_while_exiting() -> None:
    """From here on SIGINT/SIGTERM are ignored (SIG_IGN survives the interpreter's finalisation)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
