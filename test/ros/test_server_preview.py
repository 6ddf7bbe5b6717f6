"""Preview before acting: with the policy node's `preview` parameter set, each chunk about to run is sent to the
world model and the frames it leads to are replayed on `~/preview/<camera>` (+ `/compressed`), stamped with the
times they predict; without it (the default) the node has no preview publishers and asks the world model nothing."""

from __future__ import annotations

import threading
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from ros_helpers import SensorThread, server_command, start_process, stop_process, wait_until_serving
from sensor_msgs.msg import CompressedImage, Image

from motus_ros.client import MotusClient
from motus_ros.conversions import compressed_to_numpy, image_to_numpy, stamp_to_seconds
from motus_ros.profiles import load_profile

pytestmark = pytest.mark.timeout(240)

PROFILE = load_profile("aloha_sim")
# motus-tiny at the profile's 50 Hz: downsample_rate 1, video_action_ratio 2 -> a video frame every 2 control steps.
FPS = 50.0 / 2
CAMERA = PROFILE.cameras[0]


@pytest.fixture
def server():  # per test: the off-by-default test must not see this server's publishers
    process = start_process(server_command(preview=True, preview_steps=1), "MOTUS SERVER READY")
    yield process
    stop_process(process)


def test_each_chunk_is_previewed_on_preview_topics_with_the_times_it_predicts(ros_context, server):
    drivers = SensorThread(PROFILE, node_name="preview_test_drivers")
    lock = threading.Lock()
    raw, compressed, diagnostics = [], [], []

    def keep(store):
        def callback(message) -> None:
            with lock:
                store.append(message)

        return callback

    node = drivers.node
    node.create_subscription(Image, f"/policy/preview/{CAMERA.role}", keep(raw), 100)
    node.create_subscription(CompressedImage, f"/policy/preview/{CAMERA.role}/compressed", keep(compressed), 100)
    node.create_subscription(DiagnosticArray, "/diagnostics", keep(diagnostics), 10)
    client = MotusClient(node_name="preview_test_client")
    try:
        assert client.wait_for_server(60)
        client.spin(10.0, until=lambda: drivers.sensors.step > 15)
        wait_until_serving(client)
        run_started_s = time.time()  # the server's clock is the system clock (no sim time here)
        assert client.run_policy("pick", max_steps=200)
        result = client.get_result(timeout_s=120)
        run_ended_s = time.time()
        # Whether chunks arrive in time on a loaded CPU does not matter here: every chunk that arrives is previewed.
        assert result.termination in ("completed", "held_throughout"), result.termination
        assert result.chunks >= 2, result.chunks
        client.spin(3.0, until=lambda: len(raw) >= 2 and len(compressed) >= 2)
        client.spin(2.0)  # the next diagnostics message counts the previews of the whole run
    finally:
        client.destroy()
        drivers.close()

    with lock:
        raw, compressed, diagnostics = list(raw), list(compressed), list(diagnostics)
    assert len(raw) >= 2 and len(compressed) >= 2, (len(raw), len(compressed))
    image = image_to_numpy(raw[-1])  # the view at its slot size in the model's composite, as ~/imagined
    assert image.ndim == 3 and image.shape[2] == 3
    assert compressed_to_numpy(compressed[-1]).shape == image.shape
    # Stamps are the times the frames predict: within the run (after it started, before its end plus one clip),
    # not the publishing time, and the frames of one clip 1/fps apart. (Across clips they may interleave: two
    # chunks can be observed less than a video frame apart.)
    stamps = [stamp_to_seconds(message.header.stamp) for message in raw]
    assert all(run_started_s < stamp < run_ended_s + 2.0 / FPS for stamp in stamps), (run_started_s, stamps)
    gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    assert any(abs(gap - 1.0 / FPS) < 1e-6 for gap in gaps), gaps
    # The node's own count: previews were requested and published, none failed.
    policy = [
        {value.key: value.value for value in status.values}
        for message in diagnostics
        for status in message.status
        if status.name.endswith("policy")
    ]
    assert policy, "no diagnostics from the policy node"
    last = policy[-1]
    assert last["preview"] == "true"
    assert int(last["previews_published"]) >= 1 and int(last["previews_failed"]) == 0, last


def test_preview_is_off_by_default(ros_context):
    process = start_process(server_command(), "MOTUS SERVER READY")
    client = MotusClient(node_name="preview_off_client")
    try:
        assert client.wait_for_server(60)
        client.spin(1.0)
        assert client.node.count_publishers(f"/policy/preview/{CAMERA.role}") == 0
        assert client.node.count_publishers("/world_model/imagined/high") == 1  # the graph is visible at all
    finally:
        client.destroy()
        stop_process(process)
